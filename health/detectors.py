"""Detectors: pure functions from rank observations to Findings.

- crash: a rank's process exited with an error or a signal, or its supervising
  actor (or node) is gone. The culprit is the first rank to go: when one rank
  dies, its peers fail moments later with "connection closed by peer".
- hang: no step completed for longer than an adaptive limit: twice the
  slowest of the recent step intervals (as NVIDIA's resiliency extension
  derives its timeouts from the intervals it observed), plus the poll's
  margin, capped by the job's hang_timeout_s; steps that start or wait for a
  save are judged against save steps, and a rank seen stopped twice in a row
  needs no step-time evidence (`HangConfig`). The culprit is found by following who
  waits for whom within each process group and pipeline channel
  (`health/attribution.py`); a stopped process or silent beacons only break a
  tie. The finding names the collective or pipeline transfer the others wait
  in, or, when no single rank stands out, the smallest group that holds it.
  Ranks whose flight recorder was off, empty or unreadable are named in the
  finding: without it the attribution has only step counts and pipeline
  counters to go on.
- straggler: a rank that is ready for its steps' collectives later than its
  peers, as a robust outlier (median / MAD over ranks of each rank's median
  lag over a window). In synchronous training every rank's step takes the same
  wall time, so who-waits-for-whom is the signal, not step time.
"""

from __future__ import annotations

import dataclasses
import statistics
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from health.attribution import attribute, describe_chain
from health.observations import Finding, FindingKind, RankObservation

BEACON_PERIOD_S = 1.0
"""How often a rank's beacon thread publishes (trainer.progress.BeaconThread's interval)."""
POLL_PERIOD_S = 0.5
"""How often the controller reads every rank's beacon (its poll interval): progress is seen this late."""
HEARTBEAT_STALE_S = 2 * BEACON_PERIOD_S + POLL_PERIOD_S
"""A beacon older than this means the rank is frozen: two beacons missed, plus the poll that reads them."""


FINISHED_PHASES = frozenset({"done", "stopped"})
"""Beacon phases of a rank whose training loop has returned."""


@dataclass(frozen=True, slots=True)
class HangConfig:
    """How long a job may go without a completed step.

    The limit is `interval_multiple` times the slowest recent step interval, plus
    `margin_s` for the poll that sees progress late, never below `floor_s` nor
    above the job's `timeout_s`. Steps that wait for a save (the step that
    starts one and the next, which waits for its staging) are judged against the
    slowest such step seen, not against plain steps. A rank whose process the
    monitor has seen stopped (SIGSTOP: the kernel says it cannot run) in two polls
    in a row, with no step since, is a hang once no step has completed for
    `stopped_s`, in every phase: no step time needs learning to know it waits.
    """

    timeout_s: float
    """The job's hang_timeout_s: the limit never exceeds it."""
    interval_multiple: float = 2.0
    margin_s: float = 2 * POLL_PERIOD_S
    floor_s: float = 1.5
    stopped_s: float = POLL_PERIOD_S
    min_intervals: int = 3
    """Plain step intervals needed before the learned limit replaces the job's timeout."""


@dataclass(frozen=True, slots=True)
class StragglerConfig:
    min_steps: int = 5
    score_threshold: float = 6.0
    min_lag_fraction: float = 0.25
    """Ignore lags below this fraction of the step time."""
    min_lag_s: float = 0.05


def hang_limit(recent_step_seconds: Sequence[float], cfg: HangConfig, *, checkpointing: bool = False,
               saving: bool = False, save_step_seconds: Sequence[float] = (), stopped: bool = False,
               sdc_check: bool = False) -> float:
    """Seconds without a completed step that count as a hang, learned from recent step intervals.

    `recent_step_seconds`: wall time between consecutive steps (saves excluded);
    `checkpointing`: no step-time evidence applies (starting up, after the last
    step, exiting); `saving`: the step in flight starts or waits for a save,
    judged against `save_step_seconds` (the job's timeout until one is seen);
    `stopped`: a rank's process is stopped (seen so twice in a row), which no phase explains;
    `sdc_check`: an SDC check is in flight, which a replay on a disagreement can double.
    """
    if stopped:
        return min(cfg.timeout_s, cfg.stopped_s)
    if checkpointing or len(recent_step_seconds) < cfg.min_intervals:
        return cfg.timeout_s
    slowest = max(recent_step_seconds)
    if saving:
        if not save_step_seconds:
            return cfg.timeout_s
        slowest = max(slowest, max(save_step_seconds))
    limit = max(cfg.floor_s, cfg.interval_multiple * slowest + cfg.margin_s)
    return min(cfg.timeout_s, 2 * limit if sdc_check else limit)


def detect_crash(obs: Sequence[RankObservation], now: float) -> Finding | None:
    lost = [o for o in obs if not o.worker_alive]
    failed = [o for o in obs if o.worker_alive and o.returncode not in (None, 0)]
    if not lost and not failed:
        return None
    if lost:
        first = min(lost, key=lambda o: o.observed_at)
        return Finding(FindingKind.NODE_LOST, (first.rank,), (first.host,), first.observed_at, now,
                       f"rank {first.rank}'s worker on host {first.host} is gone (actor or node died)",
                       evidence={"lost_ranks": [o.rank for o in lost], "exits": _exits(failed)})
    # A signalled rank is the cause rather than the peers that saw it disappear.
    first = min(failed, key=lambda o: (o.signal is None, o.exited_at or o.observed_at))
    how = first.signal or f"exit code {first.returncode}"
    said = f": {first.error}" if first.error else ""
    return Finding(FindingKind.CRASH, (first.rank,), (first.host,), first.exited_at or first.observed_at, now,
                   f"rank {first.rank} on host {first.host} exited with {how}{said}",
                   evidence={"exits": _exits(failed)})


def _exits(obs: Sequence[RankObservation]) -> list[dict[str, object]]:
    return [{"rank": o.rank, "host": o.host, "returncode": o.returncode, "signal": o.signal,
             "exited_at": o.exited_at} for o in obs]


def detect_hang(obs: Sequence[RankObservation], last_progress_at: float, now: float,
                limit_s: float, layout: Mapping[str, int] | None = None) -> Finding | None:
    """A hang, with the rank it waits for. `layout` (dp, pp, cp, tp) fills in group members beacons lack."""
    if now - last_progress_at <= limit_s:
        return None
    live = [o for o in obs if o.worker_alive]
    if live and all(o.phase in FINISHED_PHASES for o in live):
        return None  # every rank finished its steps and is on its way out (a slow exit is no hang)
    frozen = [o for o in live if o.stopped or (o.heartbeat is not None and now - o.heartbeat > HEARTBEAT_STALE_S)]
    a = attribute(live, layout, [o.rank for o in frozen])
    stopped = [o.rank for o in live if o.stopped]
    if len(stopped) == 1 and a.culprits != (stopped[0],):
        # The kernel's word beats the wait graph: a stopped process can take no part in any collective, while the
        # graph may rest on a beacon that a loaded host wrote late (seen: a peer's stale beacon, one collective
        # behind, named instead of the SIGSTOPped rank).
        a = dataclasses.replace(a, culprits=(stopped[0],), certain=True, reason=(
            "its process is stopped, so every collective it is in waits for it"
            + (f" (the beacons alone pointed at rank{'s' if len(a.culprits) > 1 else ''} {_ranks(a.culprits)})"
               if a.culprits else "")))
    by_rank = {o.rank: o for o in live}
    culprits = [by_rank[r] for r in a.culprits if r in by_rank]
    named = culprits if a.certain else [by_rank[r] for r in a.group if r in by_rank] or culprits
    waiting = a.waiting_in
    where = ""
    if waiting is not None:
        where = f"; the other ranks wait in {waiting.describe()}"
        others = [f"{e.describe()} (rank {e.waiter})" for e in a.direct
                  if (e.kind, e.where, e.op, e.seq) != (waiting.kind, waiting.where, waiting.op, waiting.seq)]
        if others:
            where += ", and in " + ", ".join(others[:3])
        if len(a.chain) > 1:
            where += f" (chain: {describe_chain(a.chain)})"
    notes = []
    for c in culprits:
        if c.rank in {o.rank for o in frozen}:
            notes.append(f"rank {c.rank}'s process is stopped" if c.stopped else f"rank {c.rank}'s beacons stopped")
    if a.certain and culprits:
        c = culprits[0]
        who = f"rank {c.rank} on host {c.host} is the culprit: {a.reason}"
    elif culprits:
        who = f"no single rank stands out: {a.reason}"
    else:
        who = f"no rank stands out ({a.reason})"
    if notes:
        who += "; " + ", ".join(notes)
    fault_at = last_progress_at
    if len(culprits) == 1:
        c = culprits[0]
        if c.heartbeat is not None and c.rank in {o.rank for o in frozen}:
            fault_at = min(max(c.heartbeat, last_progress_at), now)
        elif c.at_time:
            fault_at = min(max(c.at_time, last_progress_at), now)
    recorder = recorder_gaps(live)
    if recorder:
        who += "; " + "; ".join(f"flight recorder {state} on rank{'s' if len(rs) > 1 else ''} {_ranks(rs)}"
                                for state, rs in recorder.items())
    summary = f"no step completed for {now - last_progress_at:.1f} s (limit {limit_s:.1f} s); {who}{where}"
    return Finding(FindingKind.HANG, tuple(x.rank for x in named), tuple(dict.fromkeys(x.host for x in named)),
                   fault_at, now, summary,
                   evidence={"waiting_in": [waiting.where, waiting.op, waiting.seq] if waiting else None,
                             "limit_s": limit_s, "steps": {o.rank: o.step for o in obs},
                             "frozen": [o.rank for o in frozen], "stopped": [o.rank for o in live if o.stopped],
                             "attribution": a.to_dict(), "flight_recorder": recorder})


def recorder_gaps(obs: Sequence[RankObservation]) -> dict[str, list[int]]:
    """Ranks whose flight recorder gave no evidence, by state (off, empty, unreadable).

    Beacons without a recorder state (older trainers) count as no gap.
    """
    out: dict[str, list[int]] = {}
    for o in obs:
        state = str((o.recorder or {}).get("state") or "ok")
        if state != "ok":
            out.setdefault(state, []).append(o.rank)
    return {k: sorted(v) for k, v in sorted(out.items())}


def _ranks(rs: Sequence[int]) -> str:
    return ", ".join(map(str, rs)) if len(rs) <= 8 else f"{len(rs)} ranks ({rs[0]}..{rs[-1]})"


def detect_stragglers(obs: Sequence[RankObservation], step_seconds: float | None, now: float,
                      cfg: StragglerConfig | None = None) -> list[Finding]:
    cfg = cfg or StragglerConfig()
    rings = {o.rank: dict(o.ready) for o in obs if o.ready}
    if len(rings) < 3 or not step_seconds:
        return []
    common = set.intersection(*(set(r) for r in rings.values()))
    steps = sorted(common)[-32:]
    if len(steps) < cfg.min_steps:
        return []
    # The first rank ready at each step, once per step: taken inside the loop over ranks it made this
    # all-against-all (16,384 ranks x 16,384 x 32 steps, minutes of CPU per tick).
    first = {s: min(rr[s] for rr in rings.values()) for s in steps}
    lag: dict[int, float] = {r: statistics.median([ring[s] - first[s] for s in steps]) for r, ring in rings.items()}
    values = list(lag.values())
    m = statistics.median(values)
    mad = statistics.median(abs(v - m) for v in values)
    scale = max(1.4826 * mad, 0.05 * step_seconds, 1e-3)
    out = []
    hosts = {o.rank: o.host for o in obs}
    for r, v in sorted(lag.items()):
        score = (v - m) / scale
        if score >= cfg.score_threshold and v >= max(cfg.min_lag_s, cfg.min_lag_fraction * step_seconds):
            out.append(Finding(FindingKind.STRAGGLER, (r,), (hosts[r],), now, now,
                               f"rank {r} on host {hosts[r]} is ready for its steps {v:.2f} s after its peers "
                               f"(median over {len(steps)} steps; score {score:.1f}; step {step_seconds:.2f} s)",
                               score=score, evidence={"lag_s": v, "median_lag_s": m, "steps": len(steps)}))
    return out


PEER_FAILURE_GRACE_S = 2.0
"""A rank that exits with an error code (no signal) may only be reacting to a peer's
death; wait this long for the root cause (a killed rank, a lost node) to surface."""


def first_cause(findings: Sequence[Finding], now: float) -> Finding | None:
    """The interrupting finding to act on: node loss, then bad GPUs, then signalled crashes,
    then other crashes once they are older than the peer-failure grace period."""
    interrupting = [f for f in findings if f.interrupting]
    if not interrupting:
        return None

    def rank(f: Finding) -> tuple[int, float]:
        order = {FindingKind.NODE_LOST: 0, FindingKind.BAD_GPU: 1, FindingKind.HANG: 3}.get(f.kind, 2)
        signalled = any(e.get("signal") for e in f.evidence.get("exits", []) if e.get("rank") in f.ranks)
        if f.kind is FindingKind.CRASH and not signalled:
            order = 4
        return order, f.fault_at

    best = min(interrupting, key=rank)
    if rank(best)[0] == 4 and now - best.detected_at < PEER_FAILURE_GRACE_S:
        return None
    return best
