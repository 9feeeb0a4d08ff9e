"""The simulation: an event loop over one job's life that drives the production decision code.

Between two events the job trains; its progress, checkpoints and stalls in that
stretch follow in closed form from the step time and the checkpoint cadence,
so a 54-day run costs one loop iteration per interruption, not per step. At
each interruption the simulated hardware hands the production code what a node
agent would: rank observations for the detectors, a log excerpt for the
classifier; the failure policy decides (retry, cordon, lemon, fail), the
scaling policy picks the next gang (reuse, spare, shrink, grow), and the
catalog writer records it all. Only the clock, the ranks and the hardware are
simulated.

Time is attributed to the causes of DESIGN.md's goodput breakdown: detection
(fault to Finding), restart (teardown, preflight, rendezvous and load), lost
work (progress since the resume point), checkpoint stall, queueing for hosts,
plus planned downtime, operator time after a failed job and the first start.
"""

from __future__ import annotations

import heapq
import math
import random
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

from health.detectors import detect_crash, detect_hang, first_cause
from health.observations import Finding, FindingKind, RankObservation
from orchestrator.catalog.repository import Catalog
from orchestrator.controller import failure_policy, scaling_policy
from orchestrator.controller.callbacks import CallbackList, ControllerCallback, InterruptionRecord
from orchestrator.controller.catalog_writer import CatalogWriter, utc
from orchestrator.controller.evidence import classify_evidence, gather_evidence, interruption_record
from orchestrator.controller.failure_policy import AttemptOutcome, FailureAction, JobHistory, OutcomeKind
from orchestrator.controller.monitor import Progress
from orchestrator.controller.placement import NodeView
from orchestrator.controller.scaling_policy import GangView, ScalingInput, ScalingKind
from orchestrator.controller.state import ControllerState, StateMachine
from orchestrator.goodput import InterruptionView
from orchestrator.hosts import LEMON_WINDOW
from orchestrator.sim.evidence import PLANNED, SURFACES, evidence_text
from orchestrator.sim.scenario import Scenario
from orchestrator.taxonomy import HARDWARE_CATEGORIES

DAY = 86_400.0
"""Newer scaling policies place whole tensor-parallel groups on one host and take the group size."""
EPOCH = 1_735_689_600.0
"""Simulated time zero: 2025-01-01 00:00 UTC (timestamps in the catalog are real dates)."""
CAUSES = ("detection", "restart", "lost_work", "checkpoint_stall", "queueing", "planned", "manual", "startup")
_OUTCOME = {"crash": OutcomeKind.CRASH, "hang": OutcomeKind.HANG, "node_lost": OutcomeKind.NODE_LOST,
            "bad_gpu": OutcomeKind.BAD_GPU, "sdc": OutcomeKind.BAD_GPU}


class SimClock:
    """The simulated clock, in the catalog writer's terms (Unix seconds)."""

    def __init__(self) -> None:
        self.now = 0.0

    def time(self) -> float:
        return EPOCH + self.now

    def sleep(self, seconds: float) -> None:
        self.now += seconds


@dataclass
class SimResult:
    scenario: str
    seed: int
    hosts: int
    gpus: int
    days: float
    wall_seconds: float
    productive_seconds: float
    work_seconds: float
    """Steps kept times the full-size step time: less than productive time while dp is shrunk."""
    time_lost_seconds: dict[str, float]
    unexpected_interruptions: int
    planned_interruptions: int
    truth: dict[str, int]
    """Injected faults per category (what the hardware did)."""
    classified: dict[str, int]
    """Recorded interruptions per category (what the classifier said)."""
    misclassified: int
    manual_interventions: int
    failure_reasons: list[str]
    cordons: int
    lemons_cordoned: int
    """Distinct hosts the failure policy cordoned as lemons."""
    lemon_listings: int
    """Times a decision named a lemon (the policy names every lemon of its window in each decision)."""
    spares_swapped: int
    shrinks: int
    grows: int
    min_dp: int
    steps: int
    attempts: int
    scaling: dict[str, int] = field(default_factory=dict)

    @property
    def ettr(self) -> float:
        return self.productive_seconds / self.wall_seconds if self.wall_seconds else 0.0

    @property
    def work_ratio(self) -> float:
        """The share of an uninterrupted full-size run's steps that were done (ETTR counts shrunk time fully)."""
        return self.work_seconds / self.wall_seconds if self.wall_seconds else 0.0


@dataclass
class _Segment:
    """A training stretch from `start` (seconds) from step `s0`, in closed form."""

    start: float
    s0: int
    step_s: float
    ckpt_steps: int
    ckpt_w: float
    snap_steps: int
    snap_w: float

    @property
    def step_eff(self) -> float:
        return self.step_s + (self.snap_w / self.snap_steps if self.snap_steps else 0.0)

    @property
    def cycle(self) -> float:
        return self.ckpt_steps * self.step_eff + self.ckpt_w

    def at(self, t: float) -> tuple[int, int, float]:
        """(steps done, newest committed checkpoint step, stall seconds) at time `t`."""
        e = max(0.0, t - self.start)
        full = int(e // self.cycle)
        rem = e - full * self.cycle
        in_cycle = min(self.ckpt_steps, int(rem // self.step_eff))
        done = full * self.ckpt_steps + in_cycle
        stall = full * self.ckpt_w + max(0.0, rem - self.ckpt_steps * self.step_eff)
        if self.snap_steps:
            stall += (done // self.snap_steps) * self.snap_w
        return done, self.s0 + full * self.ckpt_steps, stall


class RecordKeeper(ControllerCallback):
    """Keeps every interruption record in memory, with when the job resumed from it (as the catalog would)."""

    def __init__(self) -> None:
        self.records: list[InterruptionRecord] = []
        self.resumed_at: dict[int, float] = {}
        self._open: int | None = None

    def interrupted(self, record: InterruptionRecord) -> None:
        self.records.append(record)
        if not record.planned:
            self._open = len(self.records) - 1

    def progressed(self, number: int, progress: Progress, now: float) -> None:
        if progress.first_step and self._open is not None:
            self.resumed_at[self._open] = now
            self._open = None

    def views(self) -> list[InterruptionView]:
        return [InterruptionView(i, r.kind, r.category, r.component, r.planned, r.fault_at, r.detected_at,
                                 r.stopped_at, self.resumed_at.get(i), r.steps_lost, r.hosts)
                for i, r in enumerate(self.records)]


class Simulation:
    """One simulated run of `scenario`; `catalog` None runs the policies without recording."""

    def __init__(self, sc: Scenario, seed: int = 0, catalog: Catalog | None = None, job: str | None = None,
                 run_dir: Path | None = None) -> None:
        self.sc, self.seed = sc, seed
        self.rng = random.Random(seed)
        self.ev_rng = random.Random(seed + 1_000_003)
        self.job = job or sc.name
        self.catalog = catalog
        self.run_dir = run_dir
        self.clock = SimClock()
        self.records = RecordKeeper()
        self.cb = CallbackList([self.records] + ([CatalogWriter(catalog, self.job, self.clock)] if catalog else []))
        self.sm = StateMachine(self.cb.state_changed)
        p = sc.policy
        self.cfg = failure_policy.FailureConfig(max_restarts=p.max_restarts, window_s=p.restart_window_s,
                                                crash_loop_attempts=p.crash_loop_attempts,
                                                cordon_confidence=p.cordon_confidence,
                                                lemon_threshold=p.lemon_threshold)
        self.history = JobHistory()
        c, j = sc.cluster, sc.job
        self.gph = c.gpus_per_host
        self.mp = sc.model_parallel
        self.target_dp = self.dp = sc.dp
        self.hosts = [f"node-{i:05d}" for i in range(c.hosts + c.spares)]
        self.gang = self.hosts[:c.hosts]
        self.idle = self.hosts[c.hosts:]
        """Hosts outside the gang, in cluster order: the spare pool (when usable)."""
        self.cordoned: set[str] = set()
        self.down: set[str] = set()
        self.repairs: list[tuple[float, str]] = []
        self.multiplier = dict.fromkeys(self.hosts, 1.0)
        for h in self.rng.sample(self.hosts, c.lemons):
            self.multiplier[h] = c.lemon_rate_multiplier
        mean_mult = sum(self.multiplier.values()) / len(self.hosts)
        f = sc.failures
        per_host_day = {k: n * f.rate_scale / (f.over_days * f.on_hosts) for k, n in f.counts.items() if n}
        self.categories = list(per_host_day)
        self.hw_rate = {k: r / DAY / (mean_mult if k in HARDWARE_CATEGORIES else 1.0)
                        for k, r in per_host_day.items()}
        """Per host-second; hardware rates scaled so the cluster mean stays the observed one with lemons."""
        self.planned_rate = f.planned * f.rate_scale / (f.over_days * DAY)
        self.step_s = j.step_seconds
        ck = sc.checkpoint
        self.ckpt_steps = max(1, round(ck.interval_minutes * 60 / j.step_seconds))
        self.snap_steps = ck.in_memory_interval_steps
        self.lost = dict.fromkeys(CAUSES, 0.0)
        self.productive = 0.0
        self.work = 0.0
        """Steps kept, in seconds of the full-size job's step time."""
        self.truth: Counter[str] = Counter()
        self.classified: Counter[str] = Counter()
        self.scaling: Counter[str] = Counter()
        self.misclassified = self.manual = self.cordons = self.swaps = self.lemon_listings = 0
        self.lemon_set: set[str] = set()
        self.planned = self.unexpected = 0
        self.failure_reasons: list[str] = []
        self.min_dp = self.dp
        self.attempt = 0
        self.step = 0
        """Newest step whose result survives (the resume point)."""
        self.hw_times: dict[str, list[float]] = {}
        self._metrics: IO[str] | None = None
        self._nodes_cache: tuple[frozenset[str], tuple[NodeView, ...]] | None = None
        self._gang_cache: GangView | None = None
        self._rank_hosts: list[str] | None = None
        self._rank_ids: list[str] | None = None
        self._gang_index = {h: i for i, h in enumerate(self.gang)}
        self._host_index = {h: i for i, h in enumerate(self.hosts)}
        self._node_list: list[NodeView] | None = None
        self._weight = float(len(self.gang))
        g = float(self.gph)
        self._views = ([NodeView(f"id-{h}", h, "", True, g, g) for h in self.hosts],
                       [NodeView(f"id-{h}", h, "", False, g, g) for h in self.hosts])

    # ---- rates and hosts -----------------------------------------------------------------
    def _usable(self, h: str) -> bool:
        return h not in self.cordoned and h not in self.down

    def _gang_weight(self) -> float:
        """Sum of the gang's hardware rate multipliers (its host count when it holds no lemon)."""
        return sum(self.multiplier[h] for h in self.gang) if self._lemons_in_gang() else float(len(self.gang))

    def _lemons_in_gang(self) -> bool:
        return any(self.multiplier[h] != 1.0 for h in self.gang) if self.sc.cluster.lemons else False

    def _fault_rate(self) -> float:
        """Faults per second on the current gang."""
        w = self._weight = self._gang_weight()
        n = len(self.gang)
        return sum(r * (w if k in HARDWARE_CATEGORIES else n) for k, r in self.hw_rate.items())

    def _draw_fault(self) -> tuple[str, str]:
        w, n = self._weight, len(self.gang)
        weights = [self.hw_rate[k] * (w if k in HARDWARE_CATEGORIES else n) for k in self.categories]
        category = self.rng.choices(self.categories, weights)[0]
        if category in HARDWARE_CATEGORIES and w != n:
            host = self.rng.choices(self.gang, [self.multiplier[h] for h in self.gang])[0]
        else:
            host = self.rng.choice(self.gang)
        return category, host

    def _repair_until(self, t: float) -> None:
        while self.repairs and self.repairs[0][0] <= t:
            when, h = heapq.heappop(self.repairs)
            self.down.discard(h)
            if h in self.cordoned:
                self.cordoned.discard(h)
                if self.catalog is not None:
                    self.catalog.set_host_state(h, "healthy", reason="repaired and returned to the pool",
                                                actor="operations", create=True)

    # ---- the run ----------------------------------------------------------------------------
    def run(self) -> SimResult:
        sc = self.sc
        horizon = sc.job.days * DAY
        if self.catalog is not None:
            self._open_catalog()
        if self.run_dir is not None:
            self.run_dir.mkdir(parents=True, exist_ok=True)
            self._metrics = (self.run_dir / "metrics.jsonl").open("w")
        try:
            self.sm.set(ControllerState.PLACING)
            now = 0.0
            downtime = [("startup", sc.recovery.preflight_seconds + sc.recovery.restart_seconds
                         + sc.recovery.new_gang_seconds)]
            self._start_attempt(now, ScalingKind.NEW_GANG)
            while True:
                rate = self._fault_rate()
                t_fault = now + self.rng.expovariate(rate) if rate > 0 else math.inf
                t_plan = now + self.rng.expovariate(self.planned_rate) if self.planned_rate > 0 else math.inf
                t_ev = min(t_fault, t_plan, horizon)
                t_train = now + sum(d for _, d in downtime)
                if t_ev <= t_train:
                    self._spend(downtime, t_ev - now)
                    fault_step = self.step
                    seg = None
                else:
                    self._spend(downtime, t_train - now)
                    self._first_step(t_train)
                    seg = _Segment(t_train, self.step, self._step_time(), self.ckpt_steps,
                                   sc.checkpoint.blocking_seconds, self.snap_steps,
                                   sc.checkpoint.in_memory_blocking_seconds)
                if t_ev >= horizon:
                    if seg is not None:
                        done, committed, stall = seg.at(horizon)
                        self._train(seg, horizon, done, done, stall, committed)
                    break
                if t_ev == t_plan:
                    if seg is not None:
                        done, committed, stall = seg.at(t_ev)
                        self._train(seg, t_ev, done, done, stall, committed)
                    now, downtime = self._planned(t_ev)
                    continue
                category, host = self._draw_fault()
                surface = SURFACES[category]
                t_detect = t_ev + sc.recovery.detection_seconds[surface]
                if seg is not None:
                    # Progress after an SDC goes on until it is found, and is lost with the rest.
                    done, committed, stall = seg.at(t_ev)
                    fault_step = seg.s0 + done
                    kept = committed - seg.s0
                    if self.snap_steps and surface != "sdc":  # a corrupted replica's snapshot is no good
                        kept = max(kept, (done // self.snap_steps) * self.snap_steps)
                    self._train(seg, t_ev, done, kept, stall, committed)
                self.lost["detection"] += min(t_detect, horizon) - t_ev
                if t_detect >= horizon:
                    break
                now, downtime = self._fault(category, host, surface, t_ev, t_detect, fault_step)
            self.clock.now = horizon
            self.sm.set(ControllerState.SUCCEEDED, f"simulated {sc.job.days:g} days")
            if self.catalog is not None:
                self.catalog.update_job(self.job, last_step=self.step)
        finally:
            if self._metrics is not None:
                self._metrics.close()
        return self._result(horizon)

    def _step_time(self) -> float:
        """A shrunk job keeps its global batch: each replica does target_dp/dp times the work per step."""
        return self.step_s * self.target_dp / self.dp

    def _spend(self, downtime: list[tuple[str, float]], seconds: float) -> None:
        left = seconds
        for cause, d in downtime:
            take = min(d, left)
            self.lost[cause] += take
            left -= take
            if left <= 0:
                break

    def _first_step(self, t: float) -> None:
        self.clock.now = t + self._step_time()
        self.cb.progressed(self.attempt, Progress(step=self.step + 1, loss=None, tokens_per_second=None,
                                                  rank_steps={}, first_step=True), self.clock.time())

    def _train(self, seg: _Segment, t_end: float, done: int, kept: int, stall: float, committed: int) -> None:
        """Account a training stretch ending at `t_end` whose first `kept` steps survive."""
        e = t_end - seg.start
        self.productive += kept * seg.step_s
        self.work += kept * self.step_s
        self.lost["checkpoint_stall"] += stall
        self.lost["lost_work"] += max(0.0, e - kept * seg.step_s - stall)
        if self._metrics is not None:
            self._write_rows(seg, done)
        self.step = seg.s0 + kept
        if committed > seg.s0:
            self.clock.now = seg.start + (committed - seg.s0) // self.ckpt_steps * seg.cycle
            self.cb.checkpoint_committed(self.attempt, {"step": committed, "path": f"ckpt/step-{committed:08d}",
                                                        "attempt": self.attempt,
                                                        "blocked_s": self.sc.checkpoint.blocking_seconds})

    def _write_rows(self, seg: _Segment, done: int) -> None:
        assert self._metrics is not None
        w, ws = self.sc.checkpoint.blocking_seconds, self.sc.checkpoint.in_memory_blocking_seconds
        t = EPOCH + seg.start
        out = []
        for i in range(1, done + 1):
            blocked = (w if i % seg.ckpt_steps == 0 else 0.0) + (ws if seg.snap_steps and i % seg.snap_steps == 0
                                                                  else 0.0)
            secs = seg.step_s + blocked
            t += secs
            out.append(f'{{"step": {seg.s0 + i}, "loss": null, "tokens": 0, "step_seconds": {secs:.3f}, '
                       f'"checkpoint_blocked_seconds": {blocked:.3f}, "attempt": {self.attempt}, "time": {t:.3f}}}\n')
        self._metrics.writelines(out)

    # ---- interruptions --------------------------------------------------------------------------
    def _planned(self, t: float) -> tuple[float, list[tuple[str, float]]]:
        rc = self.sc.recovery
        self.planned += 1
        self.clock.now = t
        outcome = AttemptOutcome(OutcomeKind.STOPPED, self.step, self.step, detail=PLANNED, at_s=self.clock.time(),
                                 step_at_fault=self.step)
        self.history.outcomes.append(outcome)
        decision = failure_policy.decide(outcome, self.history, self.cfg)
        ev = gather_evidence(PLANNED, None, {})
        self.cb.attempt_ended(self.attempt, "stopped", PLANNED, [], self.clock.time())
        self.cb.interrupted(interruption_record(self.job, self.attempt, outcome, decision, None, ev,
                                                self.clock.time()))
        self.sm.set(ControllerState.RESTARTING, PLANNED)
        self._repair_until(t)
        scale = self._scale(t)
        self._start_attempt(t, scale)
        return t, [("planned", rc.planned_seconds + rc.teardown_seconds + rc.restart_seconds)]

    def _finding(self, surface: str, host: str, rank: int, t_fault: float, t_detect: float,
                 category: str) -> Finding:
        """What the node agents' detectors make of the fault, from the culprit's and one peer host's ranks."""
        gi = self._gang_index[host]
        peer = self.gang[(gi + 1) % len(self.gang)]
        base = (gi * self.gph, ((gi + 1) % len(self.gang)) * self.gph)
        obs: list[RankObservation] = []
        t_f, t_d = EPOCH + t_fault, EPOCH + t_detect
        for h, r0 in ((host, base[0]), (peer, base[1])):
            for r in range(r0, r0 + self.gph):
                culprit = r == rank
                if surface == "crash":
                    obs.append(RankObservation(r, h, t_d, alive=not culprit, returncode=1 if culprit else None,
                                               exited_at=t_f if culprit else None, step=self.step))
                elif surface == "node_lost":
                    obs.append(RankObservation(r, h, t_d, alive=h != host, worker_alive=h != host, step=self.step))
                else:
                    seq = 1000 if culprit else 1001
                    obs.append(RankObservation(r, h, t_d, alive=True, step=self.step, heartbeat=t_d,
                                               collectives={"dp": {"enqueued": seq, "completed": 1000,
                                                                   "op": "allreduce"}}))
        if surface == "hang":
            f = detect_hang(obs, t_f, t_d, max(0.0, t_d - t_f) - 1e-6)
        elif surface in ("crash", "node_lost"):
            f = detect_crash(obs, t_d)
        else:
            what = ("SDC check: a replica's parameters disagree with the others" if surface == "sdc" else
                    "health probe: GPU thermal slowdown")
            f = Finding(FindingKind.BAD_GPU, (rank,), (host,), t_f, t_d,
                        f"{what} on rank {rank}, host {host}")
        chosen = first_cause([f] if f is not None else [], t_d + 60.0)
        assert chosen is not None, f"detectors found nothing for a {surface} of {category}"
        return chosen

    def _fault(self, category: str, host: str, surface: str, t_fault: float, t_detect: float,
               fault_step: int) -> tuple[float, list[tuple[str, float]]]:
        rc = self.sc.recovery
        self.unexpected += 1
        self.truth[category] += 1
        self.clock.now = t_detect
        gpu = self.rng.randrange(self.gph)
        rank = self._gang_index[host] * self.gph + gpu
        finding = self._finding(surface, host, rank, t_fault, t_detect, category)
        text = evidence_text(category, self.ev_rng, host, rank, gpu, fault_step)
        ev = gather_evidence(finding.summary, finding.to_dict(), {rank: text})
        outcome = AttemptOutcome(_OUTCOME[surface], self.step, self._attempt_start, finding.ranks, finding.hosts,
                                 finding.summary, finding.to_dict(), at_s=self.clock.time(), step_at_fault=fault_step,
                                 signature=ev.signature)
        verdict = classify_evidence(outcome.kind, ev)
        assert verdict is not None
        self.classified[verdict.category] += 1
        self.misclassified += verdict.category != category
        pv = failure_policy.Verdict(verdict.category, verdict.confidence)
        self.history.outcomes.append(outcome)
        counts = self._lemon_counts(t_detect)
        if pv.hardware:
            for h in set(outcome.culprit_hosts):
                counts[h] = counts.get(h, 0) + 1
                self.hw_times.setdefault(h, []).append(t_detect)
        decision = failure_policy.decide(outcome, self.history, self.cfg, pv, counts)
        stop_at = t_detect + rc.teardown_seconds
        self.cb.attempt_ended(self.attempt, "failed", finding.summary, [], self.clock.time())
        self.clock.now = stop_at
        self.cb.interrupted(interruption_record(self.job, self.attempt, outcome, decision, verdict, ev,
                                                self.clock.time()))
        if surface == "node_lost":
            self.down.add(host)
        for h in decision.cordon_hosts:
            if h not in self.cordoned:
                self.cordons += 1
                self.cordoned.add(h)
                hours = (self.sc.cluster.maintenance_hours if category == "host_maintenance"
                         else self.sc.cluster.repair_hours)
                heapq.heappush(self.repairs, (stop_at + self.rng.expovariate(1.0 / (hours * 3600)), h))
        for h in decision.lemon_hosts:
            self.lemon_listings += 1
            if h not in self.lemon_set:
                self.lemon_set.add(h)
                self.multiplier[h] = 1.0  # a lemon's repair replaces the faulty part
        if surface == "node_lost" and host not in self.cordoned:
            heapq.heappush(self.repairs, (stop_at + self.rng.expovariate(1.0 / (self.sc.cluster.maintenance_hours
                                                                                 * 3600)), host))
        downtime: list[tuple[str, float]] = []
        if decision.action is FailureAction.FAIL:
            # The job is failed; an operator resubmits it, which starts a fresh retry history.
            self.manual += 1
            self.failure_reasons.append(decision.reason)
            self.history = JobHistory()
            downtime.append(("manual", rc.operator_minutes * 60))
        self.sm.set(ControllerState.RESTARTING, decision.reason)
        t = stop_at + sum(d for _, d in downtime)
        queue = self._wait_for_capacity(t)
        scale = self._scale(t + queue)
        self._start_attempt(t + queue, scale)
        restart = rc.teardown_seconds + rc.preflight_seconds + rc.restart_seconds + (
            0.0 if scale is ScalingKind.REUSE_GANG else rc.new_gang_seconds)
        downtime = [("restart", rc.teardown_seconds)] + downtime + [("queueing", queue),
                                                                    ("restart", restart - rc.teardown_seconds)]
        return t_detect, downtime

    def _lemon_counts(self, t: float) -> dict[str, int]:
        """Each host's hardware interruptions within the lemon window (the catalog's rule, kept in memory)."""
        since = t - LEMON_WINDOW.total_seconds()
        out = {}
        for h, times in self.hw_times.items():
            n = sum(1 for x in times if x >= since)
            if n:
                out[h] = n
        return out

    # ---- scaling -----------------------------------------------------------------------------
    def _hosts_for(self, dp: int) -> int:
        return -(-dp * self.mp // self.gph)

    def _wait_for_capacity(self, t: float) -> float:
        """Seconds until at least one data-parallel replica fits (dp shrink allowed) or the full gang does."""
        need = self._hosts_for(1 if self.sc.job.allow_shrink_dp else self.dp)
        waited = t
        self._repair_until(t)
        while len(self.hosts) - len(self.cordoned | self.down) < need and self.repairs:
            waited = max(waited, self.repairs[0][0])
            self._repair_until(waited)
        return waited - t

    def _nodes(self) -> tuple[NodeView, ...]:
        key = frozenset(self.down)
        if self._nodes_cache is None or self._nodes_cache[0] != key:
            up, gone = self._views
            if self._node_list is None:
                self._node_list = list(up)
            was = self._nodes_cache[0] if self._nodes_cache is not None else frozenset()
            for h in was ^ key:
                i = self._host_index[h]
                self._node_list[i] = gone[i] if h in key else up[i]
            self._nodes_cache = (key, tuple(self._node_list))
        return self._nodes_cache[1]

    def _scale(self, t: float) -> ScalingKind:
        self._repair_until(t)
        j = self.sc.job
        gang_set = set(self.gang)
        kept = self._gang_view()
        spares = tuple(h for h in self.idle if self._usable(h))
        inp = ScalingInput(target_dp=self.target_dp, current_dp=self.dp, model_parallel=self.mp,
                           global_batch=j.global_batch, micro_batch=j.micro_batch, cpus_per_rank=1.0,
                           gpus_per_rank=1.0, allow_shrink_dp=j.allow_shrink_dp, nodes=self._nodes(),
                           cordoned=frozenset(self.cordoned), kept=kept, spare_hosts=spares,
                           group=j.tp)
        d = scaling_policy.decide(inp)
        self.scaling[d.kind.value] += 1
        if d.kind is ScalingKind.CAPACITY_ERROR:
            raise SimulationError(f"capacity error at {t / DAY:.1f} days: {d.reason}")
        if d.kind is not ScalingKind.REUSE_GANG:
            need = self._hosts_for(d.dp)
            pool = iter(spares)
            if need == len(self.gang):  # same size: each bad host's place goes to a spare, the rest stay put
                new = list(self.gang)
                for i in sorted(self._gang_index[h] for h in self.cordoned | self.down if h in self._gang_index):
                    new[i] = next(pool)
            else:
                new = ([h for h in self.gang if self._usable(h)] + list(pool))[:need]
            self.swaps += sum(1 for h in new if h not in gang_set)
            self._move_gang(new)
            self.dp = d.dp
            self.min_dp = min(self.min_dp, self.dp)
        return d.kind

    def _move_gang(self, new: list[str]) -> None:
        """Replace the gang, patching the per-rank host lists where only a few hosts changed."""
        if len(new) == len(self.gang):
            g = self.gph
            for h in set(self.gang).difference(new):
                i = self._gang_index.pop(h)
                b = new[i]
                self._gang_index[b] = i
                if self._rank_hosts is not None and self._rank_ids is not None:
                    self._rank_hosts[i * g:(i + 1) * g] = [b] * g
                    self._rank_ids[i * g:(i + 1) * g] = [f"id-{b}"] * g
        else:
            self._rank_hosts = self._rank_ids = None
            self._gang_index = {h: i for i, h in enumerate(new)}
        self.gang = new
        self.idle = sorted(set(self.hosts).difference(new), key=self._host_index.__getitem__)
        self._gang_cache = None

    def _gang_view(self) -> GangView:
        """The kept gang as the worker group reports it (host and node of every rank), cached per gang."""
        if self._gang_cache is None:
            world = self.dp * self.mp
            if self._rank_hosts is None or self._rank_ids is None:
                self._rank_hosts = [h for h in self.gang for _ in range(self.gph)][:world]
                self._rank_ids = [f"id-{h}" for h in self._rank_hosts]
            self._gang_cache = GangView(tuple(self._rank_hosts), tuple(self._rank_ids), answering=True)
        return self._gang_cache

    def _start_attempt(self, t: float, scale: ScalingKind) -> None:
        self.attempt += 1
        self._attempt_start = self.step
        self.clock.now = t
        layout = {"dp": self.dp, "tp": self.sc.job.tp, "pp": self.sc.job.pp, "cp": self.sc.job.cp,
                  "scaling": scale.value}
        if self.dp != self.target_dp:
            layout["shrunk_from"] = self.target_dp
        if self.sm.state is not ControllerState.PLACING:
            self.sm.set(ControllerState.PLACING)
        self.cb.attempt_started(self.attempt, self.step, layout)
        self.sm.set(ControllerState.RUNNING)

    # ---- catalog and result ---------------------------------------------------------------------
    def _open_catalog(self) -> None:
        assert self.catalog is not None
        sc = self.sc
        self.catalog.create_job(self.job, {"simulation": sc.model_dump(mode="json")}, sc.gpus,
                                int(sc.job.days * DAY / sc.job.step_seconds), str(self.run_dir or ""), None)
        self.catalog.update_job(self.job, started_at=utc(EPOCH), submitted_at=utc(EPOCH))

    def _result(self, horizon: float) -> SimResult:
        sc = self.sc
        return SimResult(
            scenario=sc.name, seed=self.seed, hosts=sc.cluster.hosts, gpus=sc.gpus, days=sc.job.days,
            wall_seconds=horizon, productive_seconds=self.productive, work_seconds=self.work,
            time_lost_seconds=dict(self.lost),
            unexpected_interruptions=self.unexpected, planned_interruptions=self.planned,
            truth=dict(self.truth), classified=dict(self.classified), misclassified=self.misclassified,
            manual_interventions=self.manual, failure_reasons=self.failure_reasons, cordons=self.cordons,
            lemons_cordoned=len(self.lemon_set), lemon_listings=self.lemon_listings, spares_swapped=self.swaps,
            shrinks=self.scaling.get("shrink", 0),
            grows=self.scaling.get("grow", 0), min_dp=self.min_dp, steps=self.step, attempts=self.attempt,
            scaling=dict(self.scaling))


class SimulationError(RuntimeError):
    """The simulated job cannot go on (no capacity left); one line saying why."""

