"""JobController: the per-job Ray actor that launches, watches and restarts ranks.

The controller is an explicit state machine (`ControllerState`); its only
decisions come from the pure restart policy in `policy.py`. It keeps no state
that the catalog does not also hold, so a controller that is killed and
restarted by Ray picks the job up from the catalog.
"""

from __future__ import annotations

import contextlib
import dataclasses
import enum
import json
import logging
import os
import statistics
import threading
import time
from collections import Counter, deque
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import ray
from ray.util.placement_group import placement_group, placement_group_table, remove_placement_group
from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy, PlacementGroupSchedulingStrategy

from health.agent import NodeAgent
from health.detectors import HangConfig, detect_crash, detect_hang, detect_stragglers, first_cause, hang_limit
from health.observations import Finding, FindingKind, RankObservation
from orchestrator.catalog.db import as_utc
from orchestrator.catalog.repository import Catalog
from orchestrator.classifier import Verdict, classify
from orchestrator.controller.placement import (
    NODE_ID_LABEL,
    NodeView,
    bundles,
    capacity_error,
    exclusion_selector,
    node_views,
    rank_slots,
)
from orchestrator.controller.policy import (
    Action,
    AttemptOutcome,
    JobHistory,
    OutcomeKind,
    PolicyConfig,
    decide,
    shrunk_dp,
)
from orchestrator.controller.trainer_config import trainer_config
from orchestrator.controller.worker import RankWorker, tail
from orchestrator.hosts import cordon_lemons
from orchestrator.spec import JobSpec
from orchestrator.taxonomy import HARDWARE_CATEGORIES
from trainer.checkpoint import committed_checkpoints

logger = logging.getLogger(__name__)

NAMESPACE = "orchestrator"
POLL_INTERVAL_S = 0.5
PLACEMENT_TIMEOUT_S = 120.0
START_TIMEOUT_S = 300.0
STOP_GRACE_S = 3.0
RANK_STEPS_WRITE_INTERVAL_S = 2.0


def controller_name(job: str) -> str:
    return f"controller:{job}"


def utc(ts: float | None = None) -> datetime:
    return datetime.fromtimestamp(time.time() if ts is None else ts, UTC)


class ControllerState(enum.StrEnum):
    PENDING = "pending"
    PLACING = "placing"
    RUNNING = "running"
    RESTARTING = "restarting"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    STOPPED = "stopped"

    @property
    def terminal(self) -> bool:
        return self in (ControllerState.SUCCEEDED, ControllerState.FAILED, ControllerState.STOPPED)


_TRANSITIONS: dict[ControllerState, set[ControllerState]] = {
    ControllerState.PENDING: {ControllerState.PLACING, ControllerState.STOPPED, ControllerState.FAILED},
    ControllerState.PLACING: {ControllerState.RUNNING, ControllerState.RESTARTING,
                              ControllerState.FAILED, ControllerState.STOPPED},
    ControllerState.RUNNING: {ControllerState.RESTARTING, ControllerState.SUCCEEDED,
                              ControllerState.FAILED, ControllerState.STOPPED},
    ControllerState.RESTARTING: {ControllerState.PLACING, ControllerState.FAILED, ControllerState.STOPPED},
}


class InvalidTransition(RuntimeError):
    pass


@dataclass
class LiveAttempt:
    """Handles of the attempt in flight."""

    number: int
    attempt_id: int
    start_step: int
    pg: Any = None
    workers: list[Any] = field(default_factory=list)
    hosts: list[str] = field(default_factory=list)
    node_ids: list[str] = field(default_factory=list)
    agent_nodes: list[str] = field(default_factory=list)
    first_step_seen: bool = False
    ranks_written_at: float = 0.0
    gone: set[int] = field(default_factory=set)
    """Ranks whose supervisor (actor or node) is gone: nothing to kill or stop there, and no call to wait on."""
    layout: dict[str, Any] = field(default_factory=dict)
    """What the catalog shows of this attempt's shape: degrees, shrink, spares held and swapped in."""


@dataclass(slots=True)
class Spare:
    """One host's worth of rank bundles held aside for the job (a placement group of its own).

    Reserved without waiting: it is held once Ray places it, which may be later,
    when a host is repaired or added.
    """

    pg: Any
    ready_ref: Any
    host: str | None = None
    node_id: str | None = None


class JobController:
    """Runs one job to its end. Constructed by Ray; the loop starts at once in a thread."""

    def __init__(self, spec: dict[str, Any], db_url: str, run_dir: str, *, autostart: bool = True) -> None:
        logging.basicConfig(level=logging.INFO)
        self.spec = JobSpec.model_validate(spec)
        self.catalog = Catalog(db_url)
        self.run_dir = Path(run_dir)
        self.checkpoint_dir = Path(self.spec.checkpoint.folder or self.run_dir / "checkpoints")
        self.state = ControllerState.PENDING
        self._stop_reason: str | None = None
        self._stop = threading.Event()
        self._done = threading.Event()
        self.history = JobHistory()
        self.dp = self.spec.parallelism.dp
        """Current data-parallel degree; lower than the job file's after a shrink."""
        self.live: LiveAttempt | None = None
        self._kept: LiveAttempt | None = None
        self._spares: list[Spare] = []
        self._spare_excluded: set[str] = set()
        self._spare_per_host = 1
        """The last attempt's gang (reservation, supervisors), kept for an in-place restart."""
        self._open_interruption: int | None = None
        self._agents: dict[str, Any] = {}
        """Node id -> NodeAgent actor; kept across attempts."""
        self._thread: threading.Thread | None = None
        if autostart:
            self._thread = threading.Thread(target=self._main, name="controller", daemon=True)
            self._thread.start()

    # ---- public actor methods ----------------------------------------------------
    def ping(self) -> str:
        return self.state.value

    def pid(self) -> int:
        return os.getpid()

    def stop(self, reason: str = "stopped by the operator") -> str:
        self._stop_reason = reason
        self._stop.set()
        return self.state.value

    def wait(self, timeout_s: float | None = None) -> str:
        self._done.wait(timeout_s)
        return self.state.value

    def worker_handles(self) -> list[Any]:
        return list(self.live.workers) if self.live else []

    # ---- state machine ---------------------------------------------------------------
    def _set_state(self, new: ControllerState, reason: str | None = None) -> None:
        if new != self.state and new not in _TRANSITIONS.get(self.state, set()):
            raise InvalidTransition(f"{self.state.value} -> {new.value}")
        logger.info("job %s: %s -> %s%s", self.spec.name, self.state.value, new.value,
                    f" ({reason})" if reason else "")
        self.state = new
        fields: dict[str, Any] = {"state": new.value, "controller_heartbeat_at": utc()}
        if reason is not None:
            fields["reason"] = reason
        if new.terminal:
            fields["ended_at"] = utc()
        self.catalog.update_job(self.spec.name, **fields)

    def _main(self) -> None:
        try:
            self._run()
        except Exception as e:  # the loop must always leave a terminal state behind
            logger.exception("controller crashed")
            self._teardown()
            try:
                self._set_state(ControllerState.FAILED, f"controller error: {type(e).__name__}: {e}")
            except Exception:
                logger.exception("could not record the failure")
        finally:
            with contextlib.suppress(Exception):
                self._teardown()
            for agent in self._agents.values():
                with contextlib.suppress(Exception):
                    ray.kill(agent, no_restart=True)
            self._agents.clear()
            self._done.set()

    def _run(self) -> None:
        self._adopt_previous_attempts()
        policy = PolicyConfig(max_restarts=self.spec.reliability.max_restarts,
                              spares_available=self.spec.reliability.spares,
                              allow_shrink_dp=self.spec.reliability.allow_shrink_dp)
        while True:
            if self._stop.is_set():
                self._teardown()
                self._set_state(ControllerState.STOPPED, self._stop_reason)
                return
            self._set_state(ControllerState.PLACING)
            outcome = self._run_attempt()
            verdict = self._classify(outcome)
            if verdict is not None and verdict.category in HARDWARE_CATEGORIES:
                outcome = dataclasses.replace(outcome, hardware_suspected=True)
            self.history.outcomes.append(outcome)
            decision = decide(outcome, self.history,
                              dataclasses.replace(policy, spares_available=len(self._held_spares())))
            logger.info("job %s: decision %s: %s", self.spec.name, decision.action.value, decision.reason)
            self._record_outcome(outcome, decision.reason, verdict)
            for host in decision.cordon_hosts:
                self.catalog.set_host_state(host, "cordoned", reason=decision.reason, actor="controller",
                                            interruption_id=self._open_interruption, create=True)
            for host in cordon_lemons(self.catalog, interruption_id=self._open_interruption):
                logger.warning("job %s: host %s cordoned as a lemon", self.spec.name, host)
            if decision.action is not Action.RESTART:
                self._teardown()  # nothing is left running or reserved once the job is over
            if decision.action is Action.SUCCEED:
                self._set_state(ControllerState.SUCCEEDED, decision.reason)
                return
            if decision.action is Action.STOP:
                self._set_state(ControllerState.STOPPED, decision.reason)
                return
            if decision.action is Action.FAIL:
                self._set_state(ControllerState.FAILED, decision.reason)
                return
            self.history.restarts += 1
            self._set_state(ControllerState.RESTARTING, decision.reason)

    def _adopt_previous_attempts(self) -> None:
        """After a controller restart: close what the previous incarnation left open."""
        job = self.catalog.require_job(self.spec.name)
        if ray.get_runtime_context().was_current_actor_reconstructed:
            # Same submission, new incarnation: earlier failures still count.
            self.history.restarts = len([a for a in job.attempts if a.state in ("failed", "lost")])
        alive = {v.node_id for v in node_views(ray.nodes()) if v.alive}
        for a in job.attempts:
            if a.state not in ("starting", "running"):
                continue
            self.catalog.update_attempt(a.id, state="lost", ended_at=utc(),
                                        reason="controller lost while the attempt ran")
            for r in a.ranks:
                if r.ended_at is None:
                    self.catalog.upsert_rank(a.id, r.rank, state="lost", ended_at=utc())
            # A controller that ran on a node that died took its ranks' view with it:
            # the dead nodes, not the controller, are the cause.
            lost = sorted((r for r in a.ranks if r.node_id and r.node_id not in alive), key=lambda r: r.rank)
            lost_hosts = list(dict.fromkeys(r.host for r in lost if r.host))
            committed = self._committed_step()
            kind = OutcomeKind.NODE_LOST if lost_hosts else OutcomeKind.CONTROLLER_LOST
            explanation = (f"nodes {', '.join(lost_hosts)} left the cluster while the controller was down"
                           if lost_hosts else "the job's controller died; its ranks died with it")
            self._open_interruption = self.catalog.record_interruption(
                job_name=self.spec.name, attempt=a.number, planned=False, category="unknown",
                component="host" if lost_hosts else "unknown", confidence=0.0, kind=kind.value,
                explanation=explanation, ranks=[r.rank for r in lost], hosts=lost_hosts,
                fault_at=as_utc(job.controller_heartbeat_at) or utc(), detected_at=utc(), stopped_at=utc(),
                step_at_fault=job.last_step,
                resume_step=committed, steps_lost=max(0, job.last_step - committed),
            )
            for host in lost_hosts:
                self.catalog.set_host_state(host, "cordoned", reason=f"node lost ({explanation})",
                                            actor="controller", interruption_id=self._open_interruption,
                                            create=True)

    # ---- one attempt ----------------------------------------------------------------
    def _next_attempt_number(self) -> int:
        job = self.catalog.require_job(self.spec.name)
        return max([a.number for a in job.attempts], default=0) + 1

    def _committed_step(self) -> int:
        ck = committed_checkpoints(self.checkpoint_dir)
        return ck[-1].step if ck else 0

    def _run_attempt(self) -> AttemptOutcome:
        number = self._next_attempt_number()
        start_step = self._committed_step()
        layout = {**self.spec.parallelism.model_dump(include={"tp", "pp", "cp"}), "dp": self.dp}
        attempt_id = self.catalog.start_attempt(self.spec.name, number, start_step, layout)
        live = LiveAttempt(number=number, attempt_id=attempt_id, start_step=start_step, layout=layout)
        self.live = live
        try:
            err = self._place(live)
            if err is not None:
                return AttemptOutcome(OutcomeKind.PLACEMENT_FAILED, start_step, start_step, detail=err)
            if self._stop.is_set():
                return self._stopped(live)
            self._start_ranks(live)
            self._set_state(ControllerState.RUNNING)
            self.catalog.update_attempt(attempt_id, state="running")
            return self._supervise(live)
        finally:
            self._stop_ranks(live)
            self._kept = live if live.workers else None
            self._sync_checkpoints(number)

    @property
    def world_size(self) -> int:
        p = self.spec.parallelism
        return self.dp * p.tp * p.pp * p.cp

    def _place(self, live: LiveAttempt) -> str | None:
        r = self.spec.resources
        views = node_views(ray.nodes())
        cordoned = self.catalog.cordoned_hosts()
        kept, self._kept = self._kept, None
        if kept is not None:
            if self._reusable(kept, views, cordoned):
                self._adopt_gang(live, kept)
                self._note_spares(live)
                return None
            self._release(kept)
        # A fresh gang has first call on the spares' resources (that is the swap); spares are
        # held again from what is left once it is placed.
        spare_hosts = {s.host for s in self._held_spares()}
        self._release_spares()
        err = capacity_error(views, cordoned, self.world_size, r.cpus_per_rank, r.gpus_per_rank)
        if err is not None and self.spec.reliability.allow_shrink_dp:
            p, t = self.spec.parallelism, self.spec.training
            slots = rank_slots(views, cordoned, r.cpus_per_rank, r.gpus_per_rank, self.world_size)
            new_dp = shrunk_dp(dp=self.dp, model_parallel=p.tp * p.pp * p.cp, global_batch=t.global_batch_size,
                               micro_batch=t.micro_batch_size, slots=slots)
            if new_dp is not None:
                logger.warning("job %s: shrinking data parallelism from %d to %d (%s)", self.spec.name, self.dp,
                               new_dp, err)
                self.dp = new_dp
                live.layout.update(dp=self.dp, shrunk_from=p.dp)
                self.catalog.update_attempt(live.attempt_id, layout=live.layout)
                err = None
        if err is not None:
            return err
        world = self.world_size
        selector = exclusion_selector(views, cordoned)
        live.pg = placement_group(
            bundles(world, r.cpus_per_rank, r.gpus_per_rank),
            strategy="PACK" if r.placement == "pack" else "SPREAD",
            bundle_label_selector=[selector] * world if selector else None,
        )
        deadline = time.time() + PLACEMENT_TIMEOUT_S
        while not self._stop.is_set():
            ready, _ = ray.wait([live.pg.ready()], timeout=1.0)
            if ready:
                break
            if time.time() > deadline:
                return f"placement group for {world} ranks not ready after {PLACEMENT_TIMEOUT_S:.0f} s"
        if self._stop.is_set():
            return None
        actor = ray.remote(RankWorker)
        for rank in range(world):
            live.workers.append(actor.options(
                num_cpus=r.cpus_per_rank, num_gpus=r.gpus_per_rank or None,
                scheduling_strategy=PlacementGroupSchedulingStrategy(live.pg, placement_group_bundle_index=rank),
                max_restarts=0,
            ).remote(self.spec.name, rank, str(self.run_dir), self.spec.reliability.warm_standby))
        infos = ray.get([w.info.remote() for w in live.workers], timeout=START_TIMEOUT_S)
        by_id = {v.node_id: v for v in node_views(ray.nodes())}
        for rank, info in enumerate(infos):
            view = by_id.get(info["node_id"])
            host = view.host if view else info["hostname"]
            live.hosts.append(host)
            live.node_ids.append(info["node_id"])
            self.catalog.see_host(host, info["node_id"], info["ip"])
            self.catalog.upsert_rank(live.attempt_id, rank, host=host, node_id=info["node_id"],
                                     state="placed")
        self._infos = infos
        swapped = sorted(spare_hosts & set(live.hosts))
        if swapped:
            logger.warning("job %s: spare hosts %s swapped in", self.spec.name, ", ".join(swapped))
            live.layout["swapped_in"] = swapped
        self._reserve_spares(live, cordoned)
        return None

    def _reserve_spares(self, live: LiveAttempt, cordoned: set[str]) -> None:
        """Ask for `reliability.spares` hosts aside, each with room for one host's share of the ranks.

        One request is outstanding at a time, each off the gang's hosts, the cordoned
        ones and the spares already held, so that every spare is a host of its own.
        """
        r = self.spec.resources
        self._spare_per_host = r.ranks_per_node or max(Counter(live.node_ids).values())
        views = node_views(ray.nodes())
        self._spare_excluded = set(live.node_ids) | {v.node_id for v in views if v.host in cordoned or not v.alive}
        self._request_spare()
        self._note_spares(live)
        self._poll_spares(live)

    def _request_spare(self) -> None:
        if len(self._spares) >= self.spec.reliability.spares or any(s.host is None for s in self._spares):
            return
        r, n = self.spec.resources, self._spare_per_host
        bad = sorted(self._spare_excluded | {s.node_id for s in self._spares if s.node_id})
        pg = placement_group(bundles(n, r.cpus_per_rank, r.gpus_per_rank), strategy="STRICT_PACK",
                             bundle_label_selector=[{NODE_ID_LABEL: f"!in({','.join(bad)})"}] * n)
        self._spares.append(Spare(pg, pg.ready()))

    def _held_spares(self) -> list[Spare]:
        return [s for s in self._spares if s.host is not None]

    def _poll_spares(self, live: LiveAttempt) -> None:
        """Note spares Ray has placed since the last look (cheap: no waiting)."""
        pending = [s for s in self._spares if s.host is None]
        if not pending:
            return
        ready, _ = ray.wait([pending[0].ready_ref], timeout=0)
        if not ready:
            return
        spare = pending[0]
        spare.node_id = placement_group_table(spare.pg)["bundles_to_node_id"][0]
        view = {v.node_id: v for v in node_views(ray.nodes())}.get(spare.node_id)
        spare.host = view.host if view else spare.node_id[:12]
        logger.info("job %s: spare host %s held", self.spec.name, spare.host)
        self._note_spares(live)
        self._request_spare()

    def _note_spares(self, live: LiveAttempt) -> None:
        if self.spec.reliability.spares:
            live.layout["spares"] = [s.host for s in self._held_spares()]
            self.catalog.update_attempt(live.attempt_id, layout=live.layout)

    def _release_spares(self) -> None:
        for spare in self._spares:
            with contextlib.suppress(Exception):
                remove_placement_group(spare.pg)
        self._spares.clear()

    def _reusable(self, kept: LiveAttempt, views: list[NodeView], cordoned: set[str]) -> bool:
        """The last attempt's gang can run the next one: same size, hosts healthy, every worker answers."""
        alive = {v.node_id for v in views if v.alive}
        if len(kept.workers) != self.world_size or kept.pg is None or kept.gone:
            return False
        if any(h in cordoned for h in kept.hosts) or any(n not in alive for n in kept.node_ids):
            return False
        try:
            ray.get([w.info.remote() for w in kept.workers], timeout=10)
        except (ray.exceptions.RayError, ray.exceptions.GetTimeoutError):
            return False
        return True

    def _adopt_gang(self, live: LiveAttempt, kept: LiveAttempt) -> None:
        """Restart in place: same reservation, same supervisors, their warm standby processes."""
        live.pg, live.workers, live.hosts, live.node_ids = kept.pg, kept.workers, kept.hosts, kept.node_ids
        kept.workers, kept.pg = [], None
        for rank, (host, node) in enumerate(zip(live.hosts, live.node_ids, strict=True)):
            self.catalog.upsert_rank(live.attempt_id, rank, host=host, node_id=node, state="placed")

    def _start_ranks(self, live: LiveAttempt) -> None:
        cfg_path = self.run_dir / "attempts" / f"attempt-{live.number:03d}" / "trainer.json"
        cfg_path.parent.mkdir(parents=True, exist_ok=True)
        cfg_path.write_text(json.dumps(trainer_config(self.spec, dp=self.dp), indent=1))
        master_addr = self._infos[0]["ip"]
        master_port = ray.get(live.workers[0].free_port.remote())
        local_index: dict[str, int] = {}
        refs = []
        for rank, w in enumerate(live.workers):
            node = live.node_ids[rank]
            local_rank = local_index.get(node, 0)
            local_index[node] = local_rank + 1
            env = {"RANK": str(rank), "WORLD_SIZE": str(self.world_size), "LOCAL_RANK": str(local_rank),
                   "MASTER_ADDR": master_addr, "MASTER_PORT": str(master_port)}
            refs.append(w.start.remote(live.number, str(cfg_path), env, str(self.checkpoint_dir),
                                       self.spec.resources.cpus_per_rank))
        started = ray.get(refs, timeout=START_TIMEOUT_S)
        pids = [s["pid"] for s in started]
        logger.info("job %s: attempt %d started %d ranks (%d on warm standby processes)", self.spec.name,
                    live.number, len(started), sum(1 for s in started if s["warm"]))
        self._watch(live)
        now = utc()
        for rank, pid in enumerate(pids):
            log = self.run_dir / "logs" / f"attempt-{live.number:03d}" / f"rank-{rank:05d}.log"
            self.catalog.upsert_rank(live.attempt_id, rank, pid=pid, state="running", started_at=now,
                                     log_path=str(log))

    def _watch(self, live: LiveAttempt) -> None:
        """Point one health agent per node at that node's ranks."""
        by_node: dict[str, dict[int, Any]] = {}
        for rank, node in enumerate(live.node_ids):
            by_node.setdefault(node, {})[rank] = live.workers[rank]
        for node in list(self._agents):
            if node not in by_node:
                with contextlib.suppress(Exception):
                    ray.kill(self._agents.pop(node), no_restart=True)
        refs = []
        for node, workers in by_node.items():
            if node not in self._agents:
                host = live.hosts[live.node_ids.index(node)]
                self._agents[node] = ray.remote(NodeAgent).options(
                    num_cpus=0, max_concurrency=4, max_restarts=0,
                    scheduling_strategy=NodeAffinitySchedulingStrategy(node, soft=False),
                ).remote(host)
            refs.append(self._agents[node].watch.remote(workers))
        try:
            ray.get(refs, timeout=START_TIMEOUT_S)
        except (ray.exceptions.RayActorError, ray.exceptions.GetTimeoutError):
            pass  # a node lost now shows up as a missing report
        live.agent_nodes = list(by_node)

    def _supervise(self, live: LiveAttempt) -> AttemptOutcome:
        rel = self.spec.reliability
        hang_cfg = HangConfig(timeout_s=rel.hang_timeout_s)
        last_progress = time.time()
        last_step = live.start_step
        step_times: deque[float] = deque(maxlen=20)
        seen_ckpt = self._committed_step()
        flagged: set[int] = set()
        while True:
            if self._stop.is_set():
                return self._stopped(live)
            obs, findings = self._gather(live)
            now = time.time()
            if len(obs) < len(live.workers):
                time.sleep(POLL_INTERVAL_S)
                continue
            step = min(o.step for o in obs)
            if step > last_step:
                last_step, last_progress = step, now
                step_times.extend(o.step_seconds for o in obs[:1] if o.step_seconds)
                self._on_progress(live, obs)
            seen_ckpt = self._track_checkpoints(obs, seen_ckpt, live.number)
            self._poll_spares(live)
            self.catalog.update_job(self.spec.name, controller_heartbeat_at=utc(now))
            crash = first_cause(findings, now)
            if crash is not None:
                live.gone = {o.rank for o in obs if not o.worker_alive}
                self._record_rank_ends(live, obs)
                return self._outcome(live, crash)
            if all(o.returncode == 0 for o in obs):
                self._record_rank_ends(live, obs)
                live.ranks_written_at = 0.0  # the final steps are always written
                self._on_progress(live, obs)
                if all(o.phase == "done" for o in obs):
                    return AttemptOutcome(OutcomeKind.SUCCEEDED, self._committed_step(), live.start_step)
                return AttemptOutcome(OutcomeKind.STOPPED, self._committed_step(), live.start_step,
                                      detail="every rank exited early without an error")
            checkpointing = any(o.phase == "checkpoint" for o in obs) or not live.first_step_seen
            limit = hang_limit(list(step_times), hang_cfg, checkpointing=checkpointing)
            hang = detect_hang(obs, last_progress, now, limit, layout=live.layout)
            if hang is not None:
                return self._outcome(live, hang)
            median_step = statistics.median(step_times) if step_times else None
            for f in detect_stragglers(obs, median_step, now):
                if f.ranks[0] not in flagged:
                    flagged.add(f.ranks[0])
                    self._record_straggler(live, f)
            time.sleep(POLL_INTERVAL_S)

    def _gather(self, live: LiveAttempt) -> tuple[list[RankObservation], list[Finding]]:
        """One report per node agent; an agent that does not answer means its node is gone."""
        obs: list[RankObservation] = []
        findings: list[Finding] = []
        now = time.time()
        refs = {node: self._agents[node].report.remote() for node in live.agent_nodes}
        for node, ref in refs.items():
            try:
                rep = ray.get(ref, timeout=30)
            except (ray.exceptions.RayActorError, ray.exceptions.GetTimeoutError):
                ranks = [r for r, n in enumerate(live.node_ids) if n == node]
                lost = [RankObservation(rank=r, host=live.hosts[r], observed_at=now, alive=False,
                                        worker_alive=False) for r in ranks]
                obs.extend(lost)
                crash = detect_crash(lost, now)
                if crash is not None:
                    findings.append(crash)
                continue
            obs.extend(rep["observations"])
            findings.extend(rep["findings"])
        obs.sort(key=lambda o: o.rank)
        return obs, findings

    def _kill_all(self, live: LiveAttempt) -> None:
        """After a failure nothing is worth saving: SIGKILL every rank at once, no grace period."""
        refs = []
        for rank, w in enumerate(live.workers):
            if rank not in live.gone:
                with contextlib.suppress(Exception):
                    refs.append(w.kill.remote())
        for ref in refs:
            with contextlib.suppress(Exception):
                ray.get(ref, timeout=30)

    def _outcome(self, live: LiveAttempt, f: Finding) -> AttemptOutcome:
        self._kill_all(live)
        kind = {FindingKind.CRASH: OutcomeKind.CRASH, FindingKind.NODE_LOST: OutcomeKind.NODE_LOST,
                FindingKind.HANG: OutcomeKind.HANG, FindingKind.BAD_GPU: OutcomeKind.BAD_GPU}[f.kind]
        logger.warning("job %s: %s", self.spec.name, f.summary)
        return AttemptOutcome(kind, self._committed_step(), live.start_step, f.ranks, f.hosts,
                              kind in (OutcomeKind.NODE_LOST, OutcomeKind.BAD_GPU), f.summary, f.to_dict())

    def _record_straggler(self, live: LiveAttempt, f: Finding) -> None:
        """Stragglers do not stop the job; they are recorded so that on-call can act on the host."""
        logger.warning("job %s: straggler: %s", self.spec.name, f.summary)
        job = self.catalog.require_job(self.spec.name)
        self.catalog.record_interruption(
            job_name=self.spec.name, attempt=live.number, planned=False, category="unknown",
            component="unknown", confidence=0.0, kind="straggler", explanation=f.summary,
            ranks=list(f.ranks), hosts=list(f.hosts), evidence={"finding": f.to_dict()},
            fault_at=utc(f.fault_at), detected_at=utc(f.detected_at), step_at_fault=job.last_step,
            steps_lost=0,
        )

    def _on_progress(self, live: LiveAttempt, obs: list[RankObservation]) -> None:
        o0 = obs[0]
        fields: dict[str, Any] = {"last_step": min(o.step for o in obs)}
        if o0.loss is not None:
            fields["last_loss"] = float(o0.loss)
        if o0.tokens_per_second is not None:
            fields["tokens_per_second"] = float(o0.tokens_per_second)
        self.catalog.update_job(self.spec.name, **fields)
        if not live.first_step_seen and fields["last_step"] > live.start_step:
            live.first_step_seen = True
            self.catalog.update_attempt(live.attempt_id, first_step_at=utc())
            if self._open_interruption is not None:
                self.catalog.update_interruption(self._open_interruption, resumed_at=utc())
                self._open_interruption = None
        # Per-rank steps are for `status`; one batched write every few seconds, not per rank per poll.
        if time.time() - live.ranks_written_at >= RANK_STEPS_WRITE_INTERVAL_S:
            live.ranks_written_at = time.time()
            self.catalog.set_rank_steps(live.attempt_id, {o.rank: o.step for o in obs})

    def _track_checkpoints(self, obs: list[RankObservation], seen: int, attempt: int) -> int:
        c = obs[0].checkpoint
        step = int(c.get("checkpoint_step", 0) or 0)
        if step > seen:
            self.catalog.record_checkpoint(self.spec.name, step, c.get("checkpoint_path", ""), attempt,
                                           c.get("checkpoint_blocked_s"), c.get("checkpoint_seconds"))
            return step
        return seen

    def _sync_checkpoints(self, attempt: int) -> None:
        """Record commits found in the checkpoint folder that no beacon reported."""
        known = {c.step for c in self.catalog.checkpoints(self.spec.name)}
        for c in committed_checkpoints(self.checkpoint_dir):
            if c.step not in known:
                self.catalog.record_checkpoint(self.spec.name, c.step, str(c.path),
                                               int(c.meta.get("attempt", attempt)), None, None)

    def _record_rank_ends(self, live: LiveAttempt, obs: list[RankObservation]) -> None:
        for o in obs:
            if o.returncode is None:
                continue
            self.catalog.upsert_rank(live.attempt_id, o.rank, exit_code=o.returncode, signal=o.signal,
                                     state="exited" if o.returncode == 0 else "failed",
                                     ended_at=utc(o.exited_at or o.observed_at))

    def _stopped(self, live: LiveAttempt) -> AttemptOutcome:
        return AttemptOutcome(OutcomeKind.STOPPED, self._committed_step(), live.start_step,
                              detail=self._stop_reason or "stopped by the operator")

    def _evidence_text(self, o: AttemptOutcome) -> str:
        live = self.live
        tails = self._log_tails(live, o) if live is not None else {}
        return "\n".join([o.detail, *tails.values()])

    def _classify(self, o: AttemptOutcome) -> Verdict | None:
        if o.kind in (OutcomeKind.SUCCEEDED, OutcomeKind.STOPPED):
            return None
        signals = [e.get("signal") for e in (o.finding or {}).get("evidence", {}).get("exits", []) if e.get("signal")]
        return classify(self._evidence_text(o), kind=o.kind.value, exit_signals=signals)

    def _record_outcome(self, o: AttemptOutcome, reason: str, verdict: Verdict | None = None) -> None:
        live = self.live
        if live is None:
            return
        state = {OutcomeKind.SUCCEEDED: "succeeded", OutcomeKind.STOPPED: "stopped"}.get(o.kind, "failed")
        job = self.catalog.require_job(self.spec.name)
        self.catalog.update_attempt(live.attempt_id, state=state, ended_at=utc(), end_step=job.last_step,
                                    reason=o.detail or reason)
        if o.kind is OutcomeKind.SUCCEEDED:
            return
        now = utc()
        planned = o.kind is OutcomeKind.STOPPED
        f = o.finding or {}
        fault_at = utc(f["fault_at"]) if f.get("fault_at") else None
        detected_at = utc(f["detected_at"]) if f.get("detected_at") else now
        v = verdict.to_dict() if verdict is not None else {}
        self._open_interruption = self.catalog.record_interruption(
            job_name=self.spec.name, attempt=live.number, planned=planned,
            category=v.get("category", "unknown"), component=v.get("component", "unknown"),
            confidence=v.get("confidence", 0.0), kind="operator_stop" if planned else o.kind.value,
            explanation=o.detail + (f" | {v['explanation']}" if v else ""),
            ranks=list(o.culprit_ranks), hosts=list(o.culprit_hosts), gpus=v.get("gpus", []),
            evidence={"detail": o.detail, "finding": o.finding, "log_tails": self._log_tails(live, o),
                      "verdict": v, "xids": v.get("xids", [])},
            evidence_text=self._evidence_text(o) if not planned else None,
            fault_at=fault_at or detected_at, detected_at=detected_at, stopped_at=now,
            step_at_fault=job.last_step, resume_step=o.committed_step,
            steps_lost=max(0, job.last_step - o.committed_step),
        )

    def _log_tails(self, live: LiveAttempt, o: AttemptOutcome, max_bytes: int = 3000) -> dict[str, str]:
        """The end of each culprit rank's log (what the classifier reads)."""
        out = {}
        for r in o.culprit_ranks:
            path = self.run_dir / "logs" / f"attempt-{live.number:03d}" / f"rank-{r:05d}.log"
            out[str(r)] = tail(path, max_bytes)
        return out

    def _stop_ranks(self, live: LiveAttempt) -> None:
        """Stop the attempt's trainer processes; the supervisors and the reservation stay."""
        refs: dict[int, Any] = {}
        for rank, w in enumerate(live.workers):
            if rank not in live.gone:
                with contextlib.suppress(Exception):
                    refs[rank] = w.stop.remote(STOP_GRACE_S)
        ends: dict[int, Any] = {}
        for rank, ref in refs.items():
            with contextlib.suppress(Exception):
                ends[rank] = ray.get(ref, timeout=STOP_GRACE_S + 30)
        for rank in range(len(live.workers)):
            end = ends.get(rank)
            fields: dict[str, Any] = {"ended_at": utc()}
            if end is not None and end.get("returncode") is not None:
                fields.update(exit_code=end["returncode"], signal=end.get("signal"))
            self.catalog.upsert_rank(live.attempt_id, rank, **fields)
        self.catalog.close_open_ranks(live.attempt_id, "stopped")

    def _release(self, live: LiveAttempt) -> None:
        """Give the attempt's supervisors and reservation back to the cluster."""
        for w in live.workers:
            with contextlib.suppress(Exception):
                w.release.remote()
            with contextlib.suppress(Exception):
                ray.kill(w, no_restart=True)
        if live.pg is not None:
            with contextlib.suppress(Exception):
                remove_placement_group(live.pg)
        live.workers.clear()
        live.pg = None

    def _teardown(self) -> None:
        """The job is over (or the controller is failing): stop and release everything."""
        for live in {id(x): x for x in (self.live, self._kept) if x is not None}.values():
            if live.workers or live.pg is not None:
                self._stop_ranks(live)
                self._release(live)
        self._kept = None
        self._release_spares()
