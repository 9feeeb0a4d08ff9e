"""The controller: carries out one job, one step per state, deciding nothing itself.

Which gang runs an attempt comes from the scaling policy, what to do when an
attempt ends from the failure policy, what a round of reports means from the
monitor tick; the worker group and the spare pool act on Ray, the callbacks
(catalog writer first) make it visible. Everything it needs to carry on is read
back from the catalog when it starts, so a controller rebuilt after a crash
takes the decisions of one that never died.

Collaborators are injected: under Ray they are `RayWorkerGroup`, `RaySparePool`
and the wall clock (see `actor.py`); unit tests use fakes and step the loop one
iteration at a time.
"""

from __future__ import annotations

import logging
import statistics
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from health.detectors import HangConfig
from health.observations import Finding, FindingKind, RankObservation
from orchestrator.catalog.repository import Catalog
from orchestrator.classifier import classify
from orchestrator.controller import failure_policy, preflight, scaling_policy
from orchestrator.controller.callbacks import (
    ControllerCallback,
    RankEnd,
    RankPlacement,
)
from orchestrator.controller.checkpoint_policy import IntervalDecision
from orchestrator.controller.evidence import (
    classify_evidence,
    gather_evidence,
    interruption_record,
    rollback_record,
)
from orchestrator.controller.failure_policy import AttemptOutcome, FailureAction, JobHistory, OutcomeKind
from orchestrator.controller.interfaces import Checkpoints, Clock, SparePool, WorkerGroup
from orchestrator.controller.monitor import MonitorState, tick
from orchestrator.controller.recovery import (
    checkpoint_interval,
    current_dp,
    history_from_catalog,
    lemon_counts,
    open_attempts,
    snapshot_covered,
    snapshot_interval,
)
from orchestrator.controller.scaling_policy import ScalingInput, ScalingKind
from orchestrator.controller.snapshots import note_resume, note_snapshot, snapshot_cost, snapshot_dir
from orchestrator.controller.spares import spare_shape
from orchestrator.controller.state import ControllerState, StateMachine
from orchestrator.controller.trainer_config import trainer_config, write_trainer_config
from orchestrator.controller.worker_group import WorkerGroupError
from orchestrator.spec import JobSpec
from orchestrator.taxonomy import HARDWARE_CATEGORIES
from trainer.integrity import EXIT_SDC
from trainer.launch import EXIT_CONFIG

logger = logging.getLogger(__name__)

POLL_INTERVAL_S = 0.5
STOP_GRACE_S = 3.0
CAPACITY_POLL_S = 5.0
"""How often a restart waiting for capacity looks at the cluster again."""
HEARTBEAT_INTERVAL_S = 2.0


@dataclass
class Attempt:
    """The attempt in flight."""

    number: int
    start_step: int
    layout: dict[str, Any]
    monitor: MonitorState | None = None
    placements: list[RankPlacement] | None = None
    recovered: bool = False
    """Left open by a controller that died; closed as lost."""
    rollbacks: int = 0
    """Loss rollbacks the ranks reported and the controller recorded."""


_FINDING_OUTCOME = {FindingKind.CRASH: OutcomeKind.CRASH, FindingKind.NODE_LOST: OutcomeKind.NODE_LOST,
                    FindingKind.HANG: OutcomeKind.HANG, FindingKind.BAD_GPU: OutcomeKind.BAD_GPU}


class Controller:
    def __init__(self, spec: JobSpec, catalog: Catalog, run_dir: Path, checkpoint_dir: Path, *,
                 workers: WorkerGroup, spares: SparePool, checkpoints: Checkpoints, clock: Clock,
                 callbacks: ControllerCallback, poll_interval_s: float = POLL_INTERVAL_S) -> None:
        self.spec, self.catalog = spec, catalog
        self.run_dir, self.checkpoint_dir = run_dir, checkpoint_dir
        self.workers, self.spares, self.checkpoints = workers, spares, checkpoints
        self.clock, self.cb = clock, callbacks
        self.poll_interval_s = poll_interval_s
        self.sm = StateMachine(self.cb.state_changed)
        rel = spec.reliability
        self.failure_cfg = failure_policy.FailureConfig(max_restarts=rel.max_restarts, window_s=rel.restart_window_s,
                                                        crash_loop_attempts=rel.crash_loop_attempts)
        self.history = JobHistory()
        self.dp = spec.parallelism.dp
        """The data-parallel degree of the next attempt: the job file's, or less after a shrink."""
        self.attempt: Attempt | None = None
        self.stop_reason: str | None = None
        self._heartbeat_at = 0.0
        self._capacity_wait_since: float | None = None
        self._step_s: float | None = None
        """Median step time of the last attempt that trained (for the checkpoint interval)."""
        self._snapshot_cost: tuple[float, float] | None = None
        """(loop's wait, write) seconds per snapshot, as last measured (for the snapshot interval)."""
        self._preflight_passed: dict[str, float] = {}
        """Host -> when it last passed a preflight for this job (a restarted controller checks afresh)."""
        self._last_gang: set[str] = set()
        """Hosts of the last attempt that got past its preflight: a host not among them joins untested."""

    # ---- driving -------------------------------------------------------------------------
    @property
    def state(self) -> ControllerState:
        return self.sm.state

    def request_stop(self, reason: str) -> None:
        self.stop_reason = reason

    def step(self) -> bool:
        """Run one iteration of the state's work; False once the job is over."""
        s = self.sm.state
        if s.terminal:
            return False
        {ControllerState.PENDING: self._pending, ControllerState.PLACING: self._placing,
         ControllerState.RUNNING: self._running, ControllerState.RESTARTING: self._restarting}[s]()
        return not self.sm.state.terminal

    def run(self) -> ControllerState:
        while self.step():
            pass
        return self.sm.state

    def teardown(self, job_over: bool = True) -> None:
        """Nothing is left running or reserved once the job is over (or the controller fails: `job_over`
        False keeps what a successor would resume from)."""
        self.spares.release_all()
        self.workers.shutdown(job_over=job_over)

    # ---- states ------------------------------------------------------------------------
    def _pending(self) -> None:
        """Carry on from the catalog: what earlier attempts of this submission did, and close what they left."""
        job = self.catalog.require_job(self.spec.name)
        self.history = history_from_catalog(self.catalog, job)
        self.dp = current_dp(job, self.spec.parallelism.dp)
        if self.stop_reason is not None:
            self.sm.set(ControllerState.STOPPED, self.stop_reason)
            return
        alive = {v.node_id for v in self.workers.nodes() if v.alive}
        left = open_attempts(job, alive, self.checkpoints.committed_step(), self.clock.time())
        if not left:
            self.sm.set(ControllerState.PLACING)
            return
        for o in left[:-1]:
            self.cb.attempt_ended(o.number, "lost", o.outcome.detail, [], self.clock.time())
        last = left[-1]
        logger.warning("job %s: %s", self.spec.name, last.outcome.detail)
        self.attempt = Attempt(last.number, last.start_step, last.layout, recovered=True)
        self._end(last.outcome, [])

    def _placing(self) -> None:
        decision = self._scale()
        if self._wait_for_capacity(decision.kind is ScalingKind.CAPACITY_ERROR, decision.reason):
            return
        job = self.catalog.require_job(self.spec.name)
        number = max([a.number for a in job.attempts], default=0) + 1
        start_step = self.checkpoints.committed_step()
        p = self.spec.parallelism
        logger.info("job %s: attempt %d: %s: %s", self.spec.name, number, decision.kind.value, decision.reason)
        self.dp = decision.dp
        layout: dict[str, Any] = {"dp": self.dp, "tp": p.tp, "pp": p.pp, "cp": p.cp, "scaling": decision.kind.value}
        interval = self._checkpoint_interval()
        if interval is not None:
            layout["checkpoint_interval_steps"] = interval.steps
            layout["checkpoint_interval_reason"] = interval.reason
            logger.info("job %s: %s", self.spec.name, interval.reason)
        snap_interval = self._snapshot_interval()
        if snap_interval is not None:
            layout["snapshot_interval_steps"] = snap_interval.steps
            layout["snapshot_interval_reason"] = snap_interval.reason
            logger.info("job %s: %s", self.spec.name, snap_interval.reason)
        if self.dp != p.dp:
            layout["shrunk_from"] = p.dp
        self.attempt = a = Attempt(number, start_step, layout)
        self.cb.attempt_started(number, start_step, layout)
        if decision.kind is ScalingKind.CAPACITY_ERROR:
            self._end(self._outcome(OutcomeKind.PLACEMENT_FAILED, detail=decision.reason), [])
            return
        try:
            if decision.reuse:
                a.placements = self.workers.adopt()
            else:
                self.spares.release_all()
                a.placements = self.workers.place(self.world_size, p.tp, self._cordoned(),
                                                  lambda: bool(self.stop_reason))
            if self.stop_reason is not None:
                self._end(self._outcome(OutcomeKind.STOPPED, detail=self.stop_reason), [])
                return
            self.cb.ranks_placed(number, a.placements)
            if decision.place:
                swapped = sorted(set(decision.swap_in) & {pl.host for pl in a.placements})
                if swapped:
                    layout["swapped_in"] = swapped
                self._reserve_spares(a.placements)
            self._note_spares()
            failed = self._preflight(a)
            if failed is not None:
                self._end(failed, [])
                return
            config = trainer_config(self.spec, dp=self.dp,
                                    checkpoint_interval_steps=interval.steps if interval else None,
                                    snapshot_interval_steps=snap_interval.steps if snap_interval else None,
                                    snapshot_dir=snapshot_dir(self.spec.name, self.checkpoint_dir, job.submitted_at))
            pids = self.workers.start(number, config, str(write_trainer_config(self.run_dir, number, config)),
                                      str(self.checkpoint_dir))
        except WorkerGroupError as e:
            self._end(self._outcome(OutcomeKind.PLACEMENT_FAILED, detail=str(e)), [])
            return
        logs = {r: str(self.run_dir / "logs" / f"attempt-{number:03d}" / f"rank-{r:05d}.log") for r in pids}
        self.cb.ranks_started(number, pids, logs)
        a.monitor = MonitorState(start_step=start_step, last_progress_at=self.clock.time(), layout=dict(layout),
                                 total_steps=self.spec.training.steps, checkpoint_step=start_step)
        self.sm.set(ControllerState.RUNNING)

    def _running(self) -> None:
        a = self.attempt
        assert a is not None and a.monitor is not None
        if self.stop_reason is not None:
            ends = self.workers.stop(STOP_GRACE_S)
            self._end(self._outcome(OutcomeKind.STOPPED, detail=self.stop_reason), ends)
            return
        obs, findings = self.workers.poll()
        now = self.clock.time()
        if self.spares.poll():
            self._note_spares()
        res = tick(a.monitor, obs, findings, now, self.world_size,
                   HangConfig(timeout_s=self.spec.reliability.hang_timeout_s))
        self._snapshot_cost = snapshot_cost(obs) or self._snapshot_cost
        if note_resume(a.layout, obs) | note_snapshot(a.layout, obs, self.world_size):
            self.cb.layout_changed(a.number, a.layout)
        if res.progress is not None:
            self.cb.progressed(a.number, res.progress, now)
            self._heartbeat_at = now
        if res.checkpoint is not None:
            self.cb.checkpoint_committed(a.number, res.checkpoint)
        if res.save_failure is not None:
            logger.warning("job %s: checkpoint save failed (%d consecutive), training goes on: %s", self.spec.name,
                           res.save_failure["consecutive"], res.save_failure["error"])
            verdict = classify(res.save_failure["error"])
            self.cb.checkpoint_failed(a.number, {**res.save_failure, "verdict": verdict.to_dict()})
        self._note_rollbacks(a, obs, now)
        for f in res.stragglers:
            logger.warning("job %s: straggler: %s", self.spec.name, f.summary)
            self.cb.straggler_found(a.number, f, a.monitor.last_step)
        if res.failure is not None:
            self.workers.kill()
            failure = self.workers.check_links(res.failure)
            ends = [RankEnd(o.rank, o.returncode, o.signal, o.exited_at or o.observed_at) for o in res.exited]
            self._end(self._from_finding(failure, obs), ends + self.workers.stop(0.0))
            return
        if res.finished:
            ends = [RankEnd(o.rank, o.returncode, o.signal, o.exited_at or o.observed_at) for o in res.exited]
            kind, detail = ((OutcomeKind.SUCCEEDED, "") if res.completed else
                            (OutcomeKind.STOPPED, "every rank exited early without an error"))
            self._end(self._outcome(kind, detail=detail), ends)
            return
        if now - self._heartbeat_at >= HEARTBEAT_INTERVAL_S:
            self._heartbeat_at = now
            self.cb.heartbeat(now)
        self.clock.sleep(self.poll_interval_s)

    def _restarting(self) -> None:
        if self.stop_reason is not None:
            self.teardown()
            self.sm.set(ControllerState.STOPPED, self.stop_reason)
            return
        self.sm.set(ControllerState.PLACING)

    def _wait_for_capacity(self, short: bool, reason: str) -> bool:
        """True while a gang that does not fit should wait (reliability.capacity_wait_s) rather than fail: a
        node that rejoins or a host put back in service within the wait costs time, not an attempt."""
        if not short:
            self._capacity_wait_since = None
            return False
        if self.stop_reason is not None:  # stopped while waiting: nothing was placed, nothing is retried
            self.teardown()
            self.sm.set(ControllerState.STOPPED, self.stop_reason)
            return True
        now = self.clock.time()
        if self._capacity_wait_since is None:
            self._capacity_wait_since = now
            if self.spec.reliability.capacity_wait_s > 0:
                logger.warning("job %s: %s; waiting up to %g s for capacity (reliability.capacity_wait_s)",
                               self.spec.name, reason, self.spec.reliability.capacity_wait_s)
        if now - self._capacity_wait_since >= self.spec.reliability.capacity_wait_s:
            self._capacity_wait_since = None
            return False
        self.clock.sleep(CAPACITY_POLL_S)
        return True

    def _preflight(self, a: Attempt) -> AttemptOutcome | None:
        """Check the placed gang's hosts before its ranks start; the outcome that ends the attempt if one fails."""
        rel = self.spec.reliability
        if not rel.preflight:
            return None
        t0 = self.clock.time()
        hosts = {p.host for p in a.placements}
        last = self.history.outcomes[-1] if self.history.outcomes else None
        suspects = last.culprit_hosts if last is not None and (
            last.kind in failure_policy.LOST_HOST_KINDS or last.category in HARDWARE_CATEGORIES) else ()
        why = preflight.reason_to_check(hosts, suspects, self._preflight_passed, t0, rel.preflight_max_age_s,
                                        last_gang=self._last_gang)
        self._last_gang = set(hosts)
        if why is None:
            a.layout["preflight"] = (f"skipped: every host passed one within {rel.preflight_max_age_s:g} s and the "
                                     "last failure named none of them")
            self.cb.layout_changed(a.number, a.layout)
            return None
        report = self.workers.preflight(str(self.checkpoint_dir), rel.preflight_timeout_s, rel.preflight_collective)
        pf = preflight.decide(report)
        a.layout["preflight_s"] = round(self.clock.time() - t0, 3)
        a.layout["preflight"] = f"run: {why}"
        self.cb.layout_changed(a.number, a.layout)
        if pf.ok:
            self._preflight_passed.update(dict.fromkeys(hosts, t0))
            return None
        logger.warning("job %s: %s", self.spec.name, pf.detail)
        now = self.clock.time()
        hosts = set(pf.bad_hosts)
        ranks = tuple(sorted(r for r, h in report.rank_hosts.items() if h in hosts))
        finding = {"kind": "preflight", "ranks": list(ranks), "hosts": list(pf.bad_hosts), "fault_at": t0,
                   "detected_at": now, "summary": pf.detail, "evidence": {"probes": list(pf.evidence)}}
        return self._outcome(OutcomeKind.PREFLIGHT, detail=pf.detail, ranks=ranks, hosts=pf.bad_hosts,
                             finding=finding)

    # ---- scaling -------------------------------------------------------------------------
    @property
    def world_size(self) -> int:
        p = self.spec.parallelism
        return self.dp * p.tp * p.pp * p.cp

    def _cordoned(self) -> set[str]:
        return self.catalog.cordoned_hosts()

    def _scale(self) -> scaling_policy.ScalingDecision:
        decision = scaling_policy.decide(ScalingInput.of(
            self.spec, self.dp, nodes=tuple(self.workers.nodes()), cordoned=frozenset(self._cordoned()),
            kept=self.workers.kept(), spare_hosts=tuple(self.spares.held())))
        if not decision.reuse:
            self.workers.release()
        return decision

    def _reserve_spares(self, placements: list[RankPlacement]) -> None:
        if not self.spec.reliability.spares:
            return
        self.spares.reserve(*spare_shape(placements, self.spec.resources.ranks_per_node, self.workers.nodes(),
                                         self._cordoned()))

    def _note_spares(self) -> None:
        a = self.attempt
        if a is not None and self.spec.reliability.spares:
            a.layout["spares"] = self.spares.held()
            self.cb.layout_changed(a.number, a.layout)

    def _checkpoint_interval(self) -> IntervalDecision | None:
        """With `checkpoint.interval_steps: auto`, the interval for the next attempt (Young/Daly).

        Two levels, as in multi-level checkpointing: a failure the in-memory snapshots recovered from cost no work
        back to the checkpoint, so only the failures they did not cover set how often the checkpoint is written."""
        if not self.spec.checkpoint.auto:
            return None
        failures = sum(1 for o in self.history.outcomes if o.kind.failed)
        covered = 0
        if self.spec.checkpoint.snapshot_interval_steps:
            job = self.catalog.require_job(self.spec.name)
            covered = min(failures, snapshot_covered(job.attempts, self.checkpoints.committed_step()))
        decision = checkpoint_interval(self.spec, self.catalog, failures - covered, self._step_s, self.clock.time())
        if decision is not None and covered:
            decision = replace(decision, reason=f"{decision.reason}; {covered} other failures were recovered from "
                                                "in-memory snapshots and do not count")
        return decision

    def _snapshot_interval(self) -> IntervalDecision | None:
        """With `checkpoint.interval_steps: auto`, the in-memory snapshot interval for the next attempt."""
        failures = sum(1 for o in self.history.outcomes if o.kind.failed)
        return snapshot_interval(self.spec, self.catalog, failures, self._snapshot_cost, self._step_s,
                                 self.clock.time())

    # ---- ending an attempt ------------------------------------------------------------------
    def _outcome(self, kind: OutcomeKind, *, detail: str = "", ranks: tuple[int, ...] = (),
                 hosts: tuple[str, ...] = (), finding: dict[str, Any] | None = None) -> AttemptOutcome:
        a = self.attempt
        start = a.start_step if a is not None else 0
        reached = a.monitor.last_step if a is not None and a.monitor is not None else start
        return AttemptOutcome(kind, self.checkpoints.committed_step(), start, ranks, hosts, detail, finding,
                              at_s=self.clock.time(), step_at_fault=reached)

    def _from_finding(self, f: Finding, obs: list[RankObservation]) -> AttemptOutcome:
        kind = _FINDING_OUTCOME[f.kind]
        culprit = next((o for o in obs if f.ranks and o.rank == f.ranks[0]), None)
        if kind is OutcomeKind.CRASH and culprit is not None and culprit.returncode == EXIT_CONFIG:
            kind = OutcomeKind.CONFIG_ERROR
        logger.warning("job %s: %s", self.spec.name, f.summary)
        sdc = next((o for o in obs if o.returncode == EXIT_SDC), None)
        if kind is OutcomeKind.CRASH and sdc is not None:
            # The rank the SDC check named, whichever of its peers the crash detector saw first.
            detail = (f"rank {sdc.rank} on host={sdc.host} exited with code {EXIT_SDC}: silent data corruption: "
                      f"its replica disagreed with the others and a replay on another host agreed with them")
            return self._outcome(kind, detail=detail, ranks=(sdc.rank,), hosts=(sdc.host,), finding=f.to_dict())
        return self._outcome(kind, detail=f.summary, ranks=f.ranks, hosts=f.hosts, finding=f.to_dict())

    def _note_rollbacks(self, a: Attempt, obs: list[RankObservation], now: float) -> None:
        """Record each loss rollback the ranks did in place (they all do it together; rank order picks one)."""
        o = next((o for o in sorted(obs, key=lambda o: o.rank) if o.rollback), None)
        if o is None or int(o.rollback.get("count", 0)) <= a.rollbacks:
            return
        a.rollbacks = int(o.rollback.get("count", 0))
        if a.monitor is not None:  # steps since the checkpoint are redone: that is progress, not a hang
            a.monitor.last_step = min(a.monitor.last_step, int(o.rollback.get("to_step", a.monitor.last_step)))
            a.monitor.last_progress_at = now
        logger.warning("job %s: loss rollback: %s", self.spec.name, o.rollback.get("reason"))
        self.cb.interrupted(rollback_record(self.spec.name, a.number, o.rank, o.host, o.rollback, now))

    def _end(self, outcome: AttemptOutcome, ends: list[RankEnd]) -> None:
        """Classify, decide, record, and move to the state the decision calls for."""
        a = self.attempt
        assert a is not None
        if a.monitor is not None and a.monitor.step_times:
            self._step_s = statistics.median(a.monitor.step_times)
        probes = self.workers.probe_evidence(list(outcome.culprit_hosts)) if outcome.culprit_hosts else []
        ev = gather_evidence(outcome.detail, outcome.finding, self.workers.log_tails(list(outcome.culprit_ranks)),
                             probes)
        if ev.signature:
            outcome = replace(outcome, signature=ev.signature)
        verdict = classify_evidence(outcome.kind, ev)
        pv = failure_policy.Verdict(verdict.category, verdict.confidence) if verdict else failure_policy.Verdict()
        outcome = replace(outcome, category=pv.category)
        self.history.outcomes.append(outcome)
        counts = lemon_counts(self.catalog, self.clock.time())
        if pv.hardware:
            for h in set(outcome.culprit_hosts):
                counts[h] = counts.get(h, 0) + 1
        decision = failure_policy.decide(outcome, self.history, self.failure_cfg, pv, counts,
                                         frozenset(self._cordoned()))
        logger.info("job %s: decision %s: %s", self.spec.name, decision.action.value, decision.reason)
        state = "lost" if a.recovered else {OutcomeKind.SUCCEEDED: "succeeded",
                                            OutcomeKind.STOPPED: "stopped"}.get(outcome.kind, "failed")
        self.cb.attempt_ended(a.number, state, outcome.detail or decision.reason, ends, self.clock.time())
        if outcome.kind is not OutcomeKind.SUCCEEDED:
            self.cb.interrupted(interruption_record(self.spec.name, a.number, outcome, decision, verdict, ev,
                                                    self.clock.time()))
        self._sync_checkpoints(a.number)
        if decision.action is FailureAction.RETRY:
            self.sm.set(ControllerState.RESTARTING, decision.reason)
            return
        self.teardown()
        self.sm.set({FailureAction.SUCCEED: ControllerState.SUCCEEDED, FailureAction.STOP: ControllerState.STOPPED,
                     FailureAction.FAIL: ControllerState.FAILED}[decision.action], decision.reason)

    def _sync_checkpoints(self, number: int) -> None:
        """Record commits found in the checkpoint folder that no beacon reported."""
        known = {c.step for c in self.catalog.checkpoints(self.spec.name)}
        for step, path, attempt in self.checkpoints.committed():
            if step not in known:
                self.cb.checkpoint_committed(number, {"step": step, "path": path, "attempt": attempt or number})
