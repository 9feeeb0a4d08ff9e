"""The worker group: the gang of rank supervisors of one job, on Ray.

It places, starts or adopts, polls, stops and kills ranks, and returns plain
data (placements, observations, findings, rank ends). Every fan-out has one
deadline for the whole round. It decides nothing: which gang to use comes from
the scaling policy, what to do on a failure from the failure policy.
"""

from __future__ import annotations

import contextlib
import logging
import secrets
import time
from collections.abc import Callable, Collection
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import ray
from ray.util.placement_group import placement_group, remove_placement_group
from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy, PlacementGroupSchedulingStrategy

from health.agent import NodeAgent
from health.detectors import detect_crash
from health.link_probe import PAYLOAD_BYTES, LinkProbeServer, name_slow_link
from health.link_probe import TIMEOUT_S as LINK_TIMEOUT_S
from health.observations import Finding, FindingKind, RankObservation, retimed
from health.reachability import knock, lost_host_evidence
from orchestrator.controller.callbacks import RankEnd, RankPlacement
from orchestrator.controller.clocks import ClockOffsets
from orchestrator.controller.fanout import call_all, gather
from orchestrator.controller.placement import NodeView, exclusion_selector, group_bundles, node_views
from orchestrator.controller.preflight import PreflightReport
from orchestrator.controller.scaling_policy import GangView
from orchestrator.controller.snapshots import peer_ranks, restore_plan
from orchestrator.controller.worker import ENV_INTERFACE, RankWorker
from trainer.launch import ENV_METRICS_FILE, ENV_SNAPSHOT_DIR
from trainer.snapshot_files import host_root

logger = logging.getLogger(__name__)

METRICS_FILE = "metrics.jsonl"
METRICS_COPY_FILE = "metrics-copy.jsonl"
"""The step rows a rank on another host than rank 0's keeps too: the rows rank 0's host had not handed over when
it died are read from there."""
MARKER_FILE = ".controller"
PLACEMENT_TIMEOUT_S = 120.0
START_TIMEOUT_S = 300.0
CALL_TIMEOUT_S = 30.0
POLL_TIMEOUT_S = 10.0
PROBE_TIMEOUT_S = 10.0


def _ray_nodes() -> list[dict[str, Any]]:
    try:
        return ray.nodes()
    except Exception:  # noqa: BLE001 - the GCS unreachable: no port to knock on
        return []


class WorkerGroupError(RuntimeError):
    """The gang could not be placed or started; the attempt fails with this reason."""


@dataclass
class Gang:
    pg: Any = None
    workers: list[Any] = field(default_factory=list)
    placements: list[RankPlacement] = field(default_factory=list)
    gone: set[int] = field(default_factory=set)
    """Ranks whose supervisor (actor or node) is gone: nothing to stop there, no call to wait on."""


def _first_rank_per_host(g: Gang, skip: Collection[int] = ()) -> dict[str, int]:
    """Host -> the lowest rank placed there (ranks in `skip` left out): whose supervisor speaks for the host."""
    first: dict[str, int] = {}
    for p in g.placements:
        if p.rank not in skip:
            first.setdefault(p.host, p.rank)
    return first


class RayWorkerGroup:
    def __init__(self, job: str, run_dir: str, *, cpus_per_rank: float, gpus_per_rank: float, placement: str,
                 warm_standby: bool, network_interface: str | None = None) -> None:
        self.job, self.run_dir = job, run_dir
        self.cpus, self.gpus = cpus_per_rank, gpus_per_rank
        self.strategy = "PACK" if placement == "pack" else "SPREAD"
        self.warm_standby = warm_standby
        self.network_interface = network_interface
        self.gang: Gang | None = None
        self._agents: dict[str, Any] = {}
        """Node id -> NodeAgent actor, kept across attempts."""
        self._agent_nodes: list[str] = []
        self.checkpoint_dir: str | None = None
        """Where the agents' storage probe writes (known once the controller asks for a preflight or a start)."""
        self.clocks = ClockOffsets()
        """Each node's clock against ours: times in reports are moved onto our clock before any comparison."""
        self._metrics_offset: int | None = None
        """How far rank 0's metrics.jsonl on its own host has been copied into ours (None: rank 0 is here)."""
        self._metrics_copy: tuple[int, int, int] | None = None
        """The rank that keeps a copy of the rows on another host: (rank, offset read to, rows read)."""
        self._metrics_rows = 0
        """Rows of this attempt put into our metrics.jsonl."""
        self._link_server: LinkProbeServer | None = None
        self._heard: dict[str, float] = {}
        """Node id -> when (our clock) its agent last answered: a lost node's fault time."""
        self._snapshot_dir: str | None = None
        """The job's snapshot folder (set at the first start that takes snapshots): removed when the job ends."""

    # ---- the cluster ---------------------------------------------------------------------
    def nodes(self) -> list[NodeView]:
        return node_views(ray.nodes())

    # ---- the gang ------------------------------------------------------------------------
    def kept(self) -> GangView | None:
        """The gang of the last attempt, probed: can it run the next one?"""
        g = self.gang
        if g is None or not g.workers:
            return None
        answers = call_all(dict(enumerate(g.workers)), "info", timeout_s=PROBE_TIMEOUT_S)
        ok = not g.gone and not any(isinstance(a, BaseException) for a in answers.values())
        return GangView(tuple(p.host for p in g.placements), tuple(p.node_id for p in g.placements), ok)

    def adopt(self) -> list[RankPlacement]:
        """Restart in place: the kept gang runs the next attempt (its standbys take over)."""
        assert self.gang is not None
        self.gang.gone = set()
        return list(self.gang.placements)

    def place(self, world: int, group: int, cordoned: set[str],
              should_stop: Callable[[], bool]) -> list[RankPlacement]:
        """Reserve `world` rank slots off the cordoned hosts, `group` ranks per bundle (one tensor-parallel
        group on one host), and start a supervisor in each slot."""
        self.release()
        views = self.nodes()
        selector = exclusion_selector(views, cordoned)
        spec = group_bundles(world, group, self.cpus, self.gpus)
        pg = placement_group(spec, strategy=self.strategy,
                             bundle_label_selector=[selector] * len(spec) if selector else None)
        self.gang = Gang(pg=pg)
        deadline = time.monotonic() + PLACEMENT_TIMEOUT_S
        while not should_stop():
            ready, _ = ray.wait([pg.ready()], timeout=1.0)
            if ready:
                break
            if time.monotonic() > deadline:
                raise WorkerGroupError(f"placement group for {world} ranks not ready after "
                                       f"{PLACEMENT_TIMEOUT_S:.0f} s")
        if should_stop():
            return []
        actor = ray.remote(RankWorker)
        for rank in range(world):
            self.gang.workers.append(actor.options(
                num_cpus=self.cpus, num_gpus=self.gpus or None, max_restarts=0,
                scheduling_strategy=PlacementGroupSchedulingStrategy(pg, placement_group_bundle_index=rank // group),
            ).remote(self.job, rank, self.run_dir, self.warm_standby, self.cpus))
        infos = call_all(dict(enumerate(self.gang.workers)), "info", timeout_s=START_TIMEOUT_S)
        bad = sorted(r for r, i in infos.items() if isinstance(i, BaseException))
        if bad:
            raise WorkerGroupError(f"rank supervisors {bad[:8]} did not start: {infos[bad[0]]!r:.200}")
        by_id = {v.node_id: v for v in self.nodes()}
        for rank in range(world):
            info = infos[rank]
            view = by_id.get(info["node_id"])
            self.gang.placements.append(RankPlacement(rank, view.host if view else info["hostname"],
                                                      info["node_id"], info["ip"]))
        return list(self.gang.placements)

    def start(self, attempt: int, config: dict[str, Any], config_path: str,
              checkpoint_dir: str) -> dict[int, int | None]:
        """Start every rank's trainer for `attempt` (on its warm standby when there is one)."""
        self.checkpoint_dir = checkpoint_dir
        g = self.gang
        assert g is not None and g.workers
        world = len(g.workers)
        master_addr = g.placements[0].address
        try:
            master_port = ray.get(g.workers[0].free_port.remote(), timeout=CALL_TIMEOUT_S)
        except (ray.exceptions.RayError, ray.exceptions.GetTimeoutError) as e:
            raise WorkerGroupError(f"rank 0's supervisor does not answer: {e!r:.200}") from None
        self._metrics_offset = self._metrics_start(g.workers[0])
        self._metrics_copy, self._metrics_rows = self._metrics_copy_start(), 0
        snap_roots = self._prepare_snapshots(config)
        local: dict[str, int] = {}
        refs = {}
        for rank, w in enumerate(g.workers):
            node = g.placements[rank].node_id
            local[node] = local.get(node, -1) + 1
            env = {"RANK": str(rank), "WORLD_SIZE": str(world), "LOCAL_RANK": str(local[node]),
                   "MASTER_ADDR": master_addr, "MASTER_PORT": str(master_port)}
            if self.network_interface:
                env[ENV_INTERFACE] = self.network_interface
            if snap_roots:
                env[ENV_SNAPSHOT_DIR] = snap_roots[rank]
            if self._metrics_copy is not None and rank == self._metrics_copy[0]:
                env[ENV_METRICS_FILE] = METRICS_COPY_FILE
            refs[rank] = w.start.remote(attempt, config, config_path, env, checkpoint_dir, self.cpus)
        started = gather(refs, START_TIMEOUT_S)
        bad = sorted(r for r, s in started.items() if isinstance(s, BaseException))
        if bad:
            raise WorkerGroupError(f"ranks {bad[:8]} did not start: {started[bad[0]]!r:.200}")
        logger.info("job %s: attempt %d started %d ranks (%d on warm standby processes)", self.job, attempt, world,
                    sum(1 for s in started.values() if s["warm"]))
        self._watch()
        return {r: s["pid"] for r, s in started.items()}

    def _prepare_snapshots(self, config: dict[str, Any]) -> dict[int, str]:
        """Before the ranks start: copy onto each rank's host the newest snapshots of it that another live host
        holds (a rank moved to a spare), and point each rank's supervisor at the peer that keeps copies of its
        snapshots from now on. Returns each rank's host folder (empty when the job takes no snapshots)."""
        g = self.gang
        snap = config.get("snapshot_dir") if config.get("snapshot_interval_steps") else None
        if g is None or not snap:
            return {}
        self._snapshot_dir = snap
        root = {p.host: str(host_root(snap, p.host)) for p in g.placements}
        first = _first_rank_per_host(g)
        inv = gather({h: g.workers[r].snapshot_inventory.remote(root[h]) for h, r in first.items()}, CALL_TIMEOUT_S)
        have = {h: v for h, v in inv.items() if isinstance(v, dict)}
        plan = restore_plan(g.placements, have)
        refs = {}
        for t in plan:
            data = g.workers[first[t.source]].snapshot_read.remote(root[t.source], t.kind, t.rank, t.step)
            refs[(t.rank, t.step)] = g.workers[t.rank].snapshot_install.remote(root[t.target], "local", t.rank, data)
        for (rank, step), res in gather(refs, START_TIMEOUT_S).items():
            if isinstance(res, BaseException):
                logger.warning("job %s: rank %d: restoring its snapshot of step %d from another host failed: %r",
                               self.job, rank, step, res)
            else:
                logger.info("job %s: rank %d: snapshot of step %d restored onto host %s from its peer's copy",
                            self.job, rank, step, g.placements[rank].host)
        peers = peer_ranks(g.placements)
        if all(p is None for p in peers.values()):
            logger.info("job %s: snapshots: every rank is on host %s, no other host to keep copies: local only",
                        self.job, g.placements[0].host)
        for rank, peer in peers.items():
            if peer is not None:
                with contextlib.suppress(Exception):
                    g.workers[rank].set_snapshot_peer.remote(g.workers[peer], root[g.placements[peer].host])
        return {p.rank: root[p.host] for p in g.placements}

    def _ensure_agents(self) -> dict[str, dict[int, Any]]:
        """One health agent per node of the gang (agents of nodes the gang left are ended); node -> its ranks."""
        g = self.gang
        assert g is not None
        by_node: dict[str, dict[int, Any]] = {}
        host_of: dict[str, str] = {}
        for p in g.placements:
            by_node.setdefault(p.node_id, {})[p.rank] = g.workers[p.rank]
            host_of[p.node_id] = p.host
        for node in list(self._agents):
            if node not in by_node:
                with contextlib.suppress(Exception):
                    ray.kill(self._agents.pop(node), no_restart=True)
        for node in by_node:
            if node not in self._agents:
                self._agents[node] = ray.remote(NodeAgent).options(
                    num_cpus=0, max_concurrency=4, max_restarts=0,
                    scheduling_strategy=NodeAffinitySchedulingStrategy(node, soft=False),
                ).remote(host_of[node], run_dir=self.run_dir, checkpoint_dir=self.checkpoint_dir)
        return by_node

    def preflight(self, checkpoint_dir: str, timeout_s: float, collective: bool = True) -> PreflightReport:
        """Every gang host's probes (through its agent) and a short collective over the gang's ranks,
        each fan-out under one deadline."""
        g = self.gang
        assert g is not None and g.workers
        self.checkpoint_dir = checkpoint_dir
        deadline = time.monotonic() + timeout_s
        by_node = self._ensure_agents()
        host_of = {p.node_id: p.host for p in g.placements}
        rank_hosts = {p.rank: p.host for p in g.placements}
        probe_refs = {n: self._agents[n].probe.remote(max(1.0, timeout_s / 2)) for n in by_node}
        coll: dict[int, dict[str, Any]] = {}
        if collective:
            try:
                port = ray.get(g.workers[0].free_port.remote(), timeout=CALL_TIMEOUT_S)
            except (ray.exceptions.RayError, ray.exceptions.GetTimeoutError) as e:
                raise WorkerGroupError(f"rank 0's supervisor does not answer: {e!r:.200}") from None
            world = len(g.workers)
            budget = max(1.0, deadline - time.monotonic() - 2.0)
            refs = {}
            for rank, w in enumerate(g.workers):
                env = {"RANK": str(rank), "WORLD_SIZE": str(world), "MASTER_ADDR": g.placements[0].address,
                       "MASTER_PORT": str(port)}
                if self.network_interface:
                    env[ENV_INTERFACE] = self.network_interface
                refs[rank] = w.preflight.remote(env, budget)
            for rank, ans in gather(refs, max(1.0, deadline - time.monotonic())).items():
                coll[rank] = ans if isinstance(ans, dict) else {"ok": False, "message": f"{ans!r:.200}",
                                                                "at": time.time()}
        probed = gather(probe_refs, max(1.0, deadline - time.monotonic()))
        probes = {host_of[n]: r for n, r in probed.items() if not isinstance(r, BaseException)}
        unanswered = {host_of[n]: f"{r!r:.200}" for n, r in probed.items() if isinstance(r, BaseException)}
        return PreflightReport(probes, unanswered, coll, rank_hosts)

    def probe_evidence(self, hosts: list[str], since: float = 0.0) -> list[dict[str, Any]]:
        """The suspected hosts' probe evidence (warn and fail results) from their agents, with one deadline."""
        g = self.gang
        nodes = {p.node_id for p in (g.placements if g else []) if p.host in hosts and p.node_id in self._agents}
        answers = call_all({n: self._agents[n] for n in nodes}, "evidence", since, timeout_s=CALL_TIMEOUT_S)
        out = [e for a in answers.values() if isinstance(a, list) for e in a]
        return sorted(out, key=lambda e: float(e.get("at") or 0.0))

    def check_links(self, f: Finding) -> Finding:
        """A hang no stopped process explains may be a slow link, which stalls both ends of a ring alike: every
        gang host times a transfer to our node, and a single clear outlier is named (health/link_probe.py).
        Silent beacons do not rule it out: behind a crawling link, ranks on either end go quiet."""
        g = self.gang
        if f.kind is not FindingKind.HANG or f.evidence.get("stopped") or g is None:
            return f
        try:
            if self._link_server is None:
                self._link_server = LinkProbeServer(ray.util.get_node_ip_address())
        except OSError as e:
            logger.warning("job %s: no link probe server: %s", self.job, e)
            return f
        nodes = [n for n in self._agent_nodes if n in self._agents]
        host_of = {p.node_id: p.host for p in g.placements}
        answers = call_all({n: self._agents[n] for n in nodes}, "link_probe", self._link_server.address,
                           self._link_server.port, PAYLOAD_BYTES, LINK_TIMEOUT_S, timeout_s=LINK_TIMEOUT_S + 5)
        results = {host_of[n]: (a if isinstance(a, dict) else {"error": f"{a!r:.200}"}) for n, a in answers.items()}
        named = name_slow_link(f, results, {p.rank: p.host for p in g.placements}, time.time())
        logger.warning("job %s: %s", self.job, named.summary.rsplit("; link probe: ", 1)[-1])
        return named

    def _watch(self) -> None:
        """Point one health agent per node at that node's ranks."""
        by_node = self._ensure_agents()
        # A node lost now shows up as a missing report on the first poll.
        watched = gather({n: self._agents[n].watch.remote(workers) for n, workers in by_node.items()},
                         START_TIMEOUT_S)
        now = time.time()
        self._heard = {n: now for n, w in watched.items() if not isinstance(w, BaseException)}
        self._agent_nodes = list(by_node)

    def poll(self) -> tuple[list[RankObservation], list[Finding]]:
        """One report per node agent; an agent that does not answer in time means its node is gone."""
        g = self.gang
        assert g is not None
        sent = time.time()
        reports = call_all({n: self._agents[n] for n in self._agent_nodes}, "report", timeout_s=POLL_TIMEOUT_S)
        now = time.time()
        obs: list[RankObservation] = []
        findings: list[Finding] = []
        answered = {n for n, rep in reports.items() if not isinstance(rep, BaseException)}
        for node, rep in reports.items():
            if isinstance(rep, BaseException):
                # Last seen alive when its agent last answered: that is the fault time, not now.
                heard = self._heard.get(node, sent)
                lost = [RankObservation(rank=p.rank, host=p.host, observed_at=heard, alive=False,
                                        worker_alive=False)
                        for p in g.placements if p.node_id == node]
                obs.extend(lost)
                crash = detect_crash(lost, now)
                if crash is not None:
                    findings.append(self._reachability(crash, node, bool(answered - {node}), now - heard))
                continue
            offset = self.clocks.add(node, sent, now, rep["time"])
            self._heard[node] = min(now, rep["time"] - offset)
            obs.extend(retimed(o, offset) for o in rep["observations"])
            findings.extend(replace(f, fault_at=f.fault_at - offset, detected_at=f.detected_at - offset)
                            for f in rep["findings"])
        g.gone |= {o.rank for o in obs if not o.worker_alive}
        self._copy_metrics()  # after the reports: a rank seen to have exited has written its last row
        return obs, findings

    def _reachability(self, crash: Finding, node: str, others_answered: bool, last_heard_s: float) -> Finding:
        """The lost node's address knocked on from here: a host silent on the network, or one whose Ray node
        alone is gone, as probe evidence on the finding."""
        g = self.gang
        assert g is not None
        p = next(p for p in g.placements if p.node_id == node)
        info = next((n for n in _ray_nodes() if n.get("NodeID") == node), {})
        address = p.address or str(info.get("NodeManagerAddress") or "")
        port = int(info.get("NodeManagerPort") or 0) or None
        reach = knock(address, port) if address and port else None
        probe = lost_host_evidence(p.host, address, port, reach, others_answered, time.time(), last_heard_s)
        logger.warning("job %s: host %s lost: %s", self.job, p.host, probe["message"])
        evidence = {**crash.evidence, "probes": [*crash.evidence.get("probes", []), probe]}
        return replace(crash, summary=f"{crash.summary}; {probe['message']}", evidence=evidence)

    def _metrics_start(self, rank0: Any) -> int | None:
        """Where this attempt's rows will start in rank 0's metrics.jsonl, or None when rank 0 writes into our
        folder already (same host, or a folder the hosts share)."""
        token = secrets.token_hex(8)
        marker = Path(self.run_dir) / MARKER_FILE
        try:
            marker.parent.mkdir(parents=True, exist_ok=True)
            marker.write_text(token)
            if ray.get(rank0.sees.remote(MARKER_FILE, token), timeout=CALL_TIMEOUT_S):
                return None
            return int(ray.get(rank0.read_from.remote(METRICS_FILE, None), timeout=CALL_TIMEOUT_S)[1])
        except (ray.exceptions.RayError, ray.exceptions.GetTimeoutError) as e:
            raise WorkerGroupError(f"rank 0's supervisor does not answer: {e!r:.200}") from None

    def _metrics_copy_start(self) -> tuple[int, int, int] | None:
        """The lowest rank on another host than rank 0's, and where its copy of the rows will start; None when
        rank 0 writes into our folder or every rank is on its host."""
        g = self.gang
        if g is None or self._metrics_offset is None:
            return None
        other = [p.rank for p in g.placements if p.host != g.placements[0].host]
        if not other:
            return None
        rank = min(other)
        try:
            return rank, int(ray.get(g.workers[rank].read_from.remote(METRICS_COPY_FILE, None),
                                     timeout=CALL_TIMEOUT_S)[1]), 0
        except (ray.exceptions.RayError, ray.exceptions.GetTimeoutError):
            return None

    def _copy_metrics(self) -> None:
        """Rank 0 writes metrics.jsonl on its own host; the controller's folder gets the new rows. Once rank 0's
        supervisor is gone, the rows it had not handed over come from the copy another host keeps."""
        g = self.gang
        if g is None or self._metrics_offset is None:
            return
        if 0 in g.gone:
            self._copy_metrics_from_copy()
            return
        try:
            text, self._metrics_offset = ray.get(g.workers[0].read_from.remote(METRICS_FILE, self._metrics_offset),
                                                 timeout=POLL_TIMEOUT_S)
        except (ray.exceptions.RayError, ray.exceptions.GetTimeoutError):
            return
        self._append_rows(text.splitlines(keepends=True))

    def _copy_metrics_from_copy(self) -> None:
        g, copy = self.gang, self._metrics_copy
        if g is None or copy is None or copy[0] in g.gone:
            return
        rank, offset, seen = copy
        lines: list[str] = []
        try:
            while True:
                text, nxt = ray.get(g.workers[rank].read_from.remote(METRICS_COPY_FILE, offset),
                                    timeout=POLL_TIMEOUT_S)
                if nxt == offset:
                    break
                lines += text.splitlines(keepends=True)
                offset = nxt
        except (ray.exceptions.RayError, ray.exceptions.GetTimeoutError):
            return
        self._metrics_copy = (rank, offset, seen + len(lines))
        # The copy holds the same rows in the same order (rollbacks included): skip those rank 0 handed over.
        self._append_rows(lines[max(0, self._metrics_rows - seen):])

    def _append_rows(self, lines: list[str]) -> None:
        if lines:
            path = Path(self.run_dir) / METRICS_FILE
            path.parent.mkdir(parents=True, exist_ok=True)
            with open(path, "a") as f:
                f.writelines(lines)
            self._metrics_rows += len(lines)

    def kill(self) -> None:
        """After a failure nothing is worth saving: SIGKILL every rank at once, no grace period."""
        g = self.gang
        if g is not None:
            call_all({r: w for r, w in enumerate(g.workers) if r not in g.gone}, "kill", timeout_s=CALL_TIMEOUT_S)

    def stop(self, grace_s: float) -> list[RankEnd]:
        """Stop the attempt's trainer processes; the supervisors and the reservation stay."""
        g = self.gang
        if g is None:
            return []
        ends = call_all({r: w for r, w in enumerate(g.workers) if r not in g.gone}, "stop", grace_s,
                        timeout_s=grace_s + CALL_TIMEOUT_S)
        now = time.time()
        out = []
        for rank, end in ends.items():
            if isinstance(end, BaseException) or end.get("returncode") is None:
                continue
            # The exit time as an age on the rank's own host, then on our clock.
            age = max(0.0, end["time"] - end["exited_at"]) if end.get("exited_at") and end.get("time") else 0.0
            out.append(RankEnd(rank, end["returncode"], end.get("signal"), now - age))
        return out

    def log_tails(self, ranks: list[int], max_bytes: int = 3000) -> dict[int, str]:
        g = self.gang
        if g is None:
            return {}
        live = {r: g.workers[r] for r in ranks if r < len(g.workers) and r not in g.gone}
        tails = call_all(live, "log_tail", max_bytes, timeout_s=CALL_TIMEOUT_S)
        return {r: t for r, t in tails.items() if isinstance(t, str)}

    def _drop_snapshots(self) -> None:
        g, snap = self.gang, self._snapshot_dir
        if g is None or snap is None:
            return
        first = _first_rank_per_host(g, skip=g.gone)
        done = gather({h: g.workers[r].drop_snapshots.remote(snap) for h, r in first.items()}, PROBE_TIMEOUT_S)
        for host, res in done.items():
            if isinstance(res, BaseException):
                logger.warning("job %s: the snapshots on host %s were not removed: %r", self.job, host, res)

    def handles(self) -> list[Any]:
        return list(self.gang.workers) if self.gang else []

    def release(self) -> None:
        """Give the gang's supervisors and reservation back to the cluster."""
        g, self.gang = self.gang, None
        if g is None:
            return
        for w in g.workers:
            with contextlib.suppress(Exception):
                w.release.remote()
            with contextlib.suppress(Exception):
                ray.kill(w, no_restart=True)
        if g.pg is not None:
            with contextlib.suppress(Exception):
                remove_placement_group(g.pg)

    def shutdown(self, job_over: bool = True) -> None:
        """End everything of the job here. Once the job is over its snapshots go too (from every host of the last
        gang): a later submission never resumes from them. A controller that fails leaves them for its successor."""
        if self.gang is not None:
            self.stop(3.0)
            if job_over:
                self._drop_snapshots()
        self.release()
        for agent in self._agents.values():
            with contextlib.suppress(Exception):
                ray.kill(agent, no_restart=True)
        self._agents.clear()
        if self._link_server is not None:
            self._link_server.close()
            self._link_server = None
