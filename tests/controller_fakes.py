"""Fakes for driving the controller without Ray: a scripted cluster, a worker group, spares and a clock.

The fake worker group trains at `steps_per_poll` steps per poll and commits a
checkpoint every `interval` steps; a test scripts what goes wrong in each
attempt (a crash with some log tail, a lost node, a hang, a config error).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from health.detectors import detect_crash
from health.link_probe import name_slow_link
from health.observations import Finding, FindingKind, RankObservation
from health.probes.base import ProbeResult, Severity
from health.probes.suite import bad_gpu_finding
from orchestrator.controller.callbacks import RankEnd, RankPlacement
from orchestrator.controller.placement import NodeView
from orchestrator.controller.preflight import PreflightReport
from orchestrator.controller.scaling_policy import GangView


class FakeClock:
    def __init__(self, start: float = 1_000_000.0) -> None:
        self.now = start

    def time(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.now += seconds


@dataclass
class Fault:
    """What ends an attempt: `kind` crash | node_lost | hang | config | exit_early | bad_gpu | sdc, at `at_step`.

    bad_gpu: the rank's host agent's probe reports `probe` (a ProbeResult message) as a fail.
    sdc: the rank exits with the SDC check's code and rank 0 (its peer) with a gloo error at the same time.
    rollback: every rank rolls back to the newest checkpoint once (a NaN loss) and training goes on.
    stall: no step completes, yet every rank is alive and beating (as behind a slow link).
    """

    kind: str
    at_step: int
    rank: int = 0
    log: str = ""
    signal: str | None = "SIGKILL"
    probe: str = ""


class FakeCheckpoints:
    def __init__(self) -> None:
        self.steps: list[int] = []

    def committed_step(self) -> int:
        return self.steps[-1] if self.steps else 0

    def committed(self) -> list[tuple[int, str, int | None]]:
        return [(s, f"/ckpt/step-{s:08d}", None) for s in self.steps]


@dataclass
class FakeWorkerGroup:
    clock: FakeClock
    checkpoints: FakeCheckpoints
    hosts: list[str]
    slots_per_host: int
    total_steps: int
    interval: int = 4
    steps_per_poll: int = 1
    faults: dict[int, Fault] = field(default_factory=dict)
    """Attempt number -> what goes wrong in it."""
    dead: set[str] = field(default_factory=set)
    placements: list[RankPlacement] = field(default_factory=list)
    calls: list[str] = field(default_factory=list)
    attempt: int = 0
    step: int = 0
    ended: bool = False
    finding: Finding | None = None
    """The agent's crash finding of this attempt: kept once seen, as the real agent does."""
    hang_started: bool = False
    link_results: dict[str, dict] = field(default_factory=dict)
    """Host -> what its agent's link probe measured (empty: no probe answers)."""
    _last_rollback: dict = field(default_factory=dict)
    preflight_fails: dict[str, list[str]] = field(default_factory=dict)
    """Host -> messages its probes fail with at preflight (every preflight until the test clears it)."""
    preflight_seconds: float = 2.0
    """Fake time one preflight takes."""
    preflights: list[list[str]] = field(default_factory=list)
    """The hosts of each preflight, in order."""
    probes_seen: dict[str, list[dict]] = field(default_factory=dict)
    """Host -> warn/fail results its agent has kept (what probe_evidence returns)."""
    snapshot_cost: tuple[float, float] | None = None
    """(loop's wait, write) seconds of each in-memory snapshot the ranks report; None: they report none."""
    snapshot_intervals: list[int] = field(default_factory=list)
    """The snapshot interval each attempt was started with."""

    def nodes(self) -> list[NodeView]:
        return [NodeView(f"node-{h}", h, f"10.0.0.{i}", h not in self.dead, float(self.slots_per_host), 0.0)
                for i, h in enumerate(self.hosts)]

    def kept(self) -> GangView | None:
        if not self.placements:
            return None
        return GangView(tuple(p.host for p in self.placements), tuple(p.node_id for p in self.placements),
                        not any(p.host in self.dead for p in self.placements))

    def adopt(self) -> list[RankPlacement]:
        self.calls.append("adopt")
        return list(self.placements)

    def place(self, world: int, group: int, cordoned: set[str], should_stop: object) -> list[RankPlacement]:
        self.calls.append(f"place:{world}")
        self.placements = []
        for h in self.hosts:
            if h in cordoned or h in self.dead:
                continue
            for _ in range(self.slots_per_host):
                if len(self.placements) < world:
                    self.placements.append(RankPlacement(len(self.placements), h, f"node-{h}"))
        assert len(self.placements) == world, "the scaling policy asked for more ranks than fit"
        return list(self.placements)

    def start(self, attempt: int, config: dict, config_path: str, checkpoint_dir: str) -> dict[int, int | None]:
        self.calls.append(f"start:{attempt}")
        self.interval = int(config.get("checkpoint_interval_steps", self.interval))
        self.snapshot_intervals.append(int(config.get("snapshot_interval_steps") or 0))
        self.attempt, self.step, self.ended = attempt, self.checkpoints.committed_step(), False
        self.finding, self.hang_started, self._last_rollback = None, False, {}
        return {p.rank: 1000 + p.rank for p in self.placements}

    def _obs(self, rank: int, host: str, **kw: object) -> RankObservation:
        last = self.checkpoints.committed_step()
        base: dict[str, object] = dict(rank=rank, host=host, observed_at=self.clock.now, alive=True,
                                       step=self.step, step_seconds=0.5, heartbeat=self.clock.now,
                                       phase="train", loss=2.0,
                                       checkpoint={"checkpoint_step": last, "checkpoint_path": f"/ckpt/{last}",
                                                   "checkpoint_blocked_s": 0.02, "checkpoint_seconds": 0.3}
                                       if last else {})
        if self.snapshot_cost is not None and self.step:
            n = self.step  # running totals, as a rank's beacon carries them
            base["snapshots"] = {"count": n, "blocked_s": n * self.snapshot_cost[0],
                                 "write_s": n * self.snapshot_cost[1]}
        base.update(kw)
        return RankObservation(**base)  # type: ignore[arg-type]

    def poll(self) -> tuple[list[RankObservation], list[Finding]]:
        fault = self.faults.get(self.attempt)
        rollback: dict = {}
        if fault is not None and fault.kind == "rollback":
            if self.step == fault.at_step and not self.hang_started:
                self.hang_started = True  # once
                back = self.checkpoints.committed_step()
                rollback = {"count": 1, "at_step": self.step, "to_step": back, "skipped_batches": self.step - back,
                            "reason": "loss is nan (not finite)", "time": self.clock.now}
                self.step = back
                self._last_rollback = rollback
            fault = None
        if fault is None or self.step < fault.at_step:
            self.step = min(self.total_steps, self.step + self.steps_per_poll)
            if self.step % self.interval == 0 and self.step not in self.checkpoints.steps:
                self.checkpoints.steps.append(self.step)
        fault_now = fault is not None and self.step >= fault.at_step
        if fault_now and fault.kind in ("hang", "stall") and not self.hang_started:
            self.hang_started = True
            self.clock.now += 100  # the hang limit passes while nothing moves
        obs = []
        for p in self.placements:
            kw: dict[str, object] = {}
            if self.step >= self.total_steps and not fault_now:
                kw = dict(alive=False, returncode=0, phase="done", exited_at=self.clock.now)
            elif fault_now and p.rank == fault.rank:
                if fault.kind == "crash":
                    kw = dict(alive=False, returncode=-9 if fault.signal else 1, signal=fault.signal,
                              exited_at=self.clock.now)
                elif fault.kind == "config":
                    kw = dict(alive=False, returncode=78, exited_at=self.clock.now)
                elif fault.kind == "sdc":
                    kw = dict(alive=False, returncode=86, exited_at=self.clock.now)
                elif fault.kind == "node_lost":
                    self.dead.add(p.host)
                    kw = dict(alive=False, worker_alive=False)
                elif fault.kind == "hang":
                    kw = dict(stopped=True, heartbeat=self.clock.now - 99)
            elif fault_now and fault.kind == "sdc" and p.rank == 0:
                kw = dict(alive=False, returncode=1, exited_at=self.clock.now - 1)  # its peer, seen first
            if self._last_rollback:
                kw["rollback"] = self._last_rollback  # the beacon keeps the newest rollback
            obs.append(self._obs(p.rank, p.host, **kw))
        if fault_now and fault.kind == "bad_gpu" and self.finding is None:
            host = next(p.host for p in self.placements if p.rank == fault.rank)
            result = ProbeResult("gpu", Severity.FAIL, fault.probe, host, 0, "nvml", self.clock.now)
            self.probes_seen.setdefault(host, []).append(result.to_dict())
            ranks = tuple(p.rank for p in self.placements if p.host == host)
            self.finding = bad_gpu_finding([result], host, self.clock.now, ranks)
        if self.finding is None:
            self.finding = detect_crash(obs, self.clock.now)
        return obs, [self.finding] if self.finding is not None else []

    def preflight(self, checkpoint_dir: str, timeout_s: float, collective: bool = True) -> PreflightReport:
        hosts = sorted({p.host for p in self.placements})
        self.preflights.append(hosts)
        self.calls.append("preflight")
        self.clock.now += self.preflight_seconds
        probes: dict[str, list[dict]] = {}
        for h in hosts:
            fails = [ProbeResult("gpu", Severity.FAIL, m, h, 0, "nvml", self.clock.now).to_dict()
                     for m in self.preflight_fails.get(h, [])]
            probes[h] = fails or [ProbeResult("gpu", Severity.OK, "GPU 0: healthy", h, 0, "nvml").to_dict()]
            self.probes_seen.setdefault(h, []).extend(fails)
        coll = {p.rank: {"ok": True, "message": "all-reduce agreed"} for p in self.placements} if collective else {}
        return PreflightReport(probes, {}, coll, {p.rank: p.host for p in self.placements})

    def probe_evidence(self, hosts: list[str], since: float = 0.0) -> list[dict]:
        return sorted((r for h in hosts for r in self.probes_seen.get(h, [])), key=lambda r: r["at"])

    def kill(self) -> None:
        self.calls.append("kill")

    def check_links(self, f: Finding) -> Finding:
        if f.kind is not FindingKind.HANG or f.evidence.get("stopped") or not self.link_results:
            return f
        return name_slow_link(f, self.link_results, {p.rank: p.host for p in self.placements}, self.clock.now)

    def stop(self, grace_s: float) -> list[RankEnd]:
        self.calls.append("stop")
        return []

    def log_tails(self, ranks: list[int], max_bytes: int = 3000) -> dict[int, str]:
        fault = self.faults.get(self.attempt)
        return {r: fault.log for r in ranks if fault is not None and fault.log and r == fault.rank}

    def release(self) -> None:
        if self.placements:
            self.calls.append("release")
        self.placements = []

    def shutdown(self, job_over: bool = True) -> None:
        self.calls.append("shutdown" if job_over else "shutdown (job goes on)")
        self.placements = []


@dataclass
class FakeSpares:
    hosts: list[str] = field(default_factory=list)
    """Hosts the pool may hold, in order."""
    count: int = 0
    held_now: list[str] = field(default_factory=list)

    def held(self) -> list[str]:
        return list(self.held_now)

    def reserve(self, per_host: int, exclude_node_ids: set[str]) -> None:
        free = [h for h in self.hosts if f"node-{h}" not in exclude_node_ids]
        self.held_now = free[: self.count]

    def poll(self) -> bool:
        return False

    def release_all(self) -> None:
        self.held_now = []


def finding_kinds(findings: list[Finding]) -> list[FindingKind]:
    return [f.kind for f in findings]
