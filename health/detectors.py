"""Detectors: pure functions from rank observations to Findings.

- crash: a rank's process exited with an error or a signal, or its supervising
  actor (or node) is gone. The culprit is the first rank to go: when one rank
  dies, its peers fail moments later with "connection closed by peer".
- hang: no step completed for longer than an adaptive limit, a multiple of
  the recent step time (as NVIDIA's resiliency extension derives its timeouts),
  capped by the job's hang_timeout_s. The culprit is a rank whose process is
  stopped or whose beacons stopped, else the rank whose collective sequence
  lags the others'; the finding names the collective the others wait in.
- straggler: a rank that is ready for its steps' collectives later than its
  peers, as a robust outlier (median / MAD over ranks of each rank's median
  lag over a window). In synchronous training every rank's step takes the same
  wall time, so who-waits-for-whom is the signal, not step time.
"""

from __future__ import annotations

import statistics
from collections.abc import Sequence
from dataclasses import dataclass

from health.observations import Finding, FindingKind, RankObservation

HEARTBEAT_STALE_S = 5.0
"""A beacon older than this (the beacon thread publishes every second) means the rank is frozen."""


@dataclass(frozen=True, slots=True)
class HangConfig:
    timeout_s: float
    """The job's hang_timeout_s: the limit never exceeds it."""
    step_multiple: float = 10.0
    floor_s: float = 5.0


@dataclass(frozen=True, slots=True)
class StragglerConfig:
    min_steps: int = 5
    score_threshold: float = 6.0
    min_lag_fraction: float = 0.25
    """Ignore lags below this fraction of the step time."""
    min_lag_s: float = 0.05


def hang_limit(recent_step_seconds: Sequence[float], cfg: HangConfig, *, checkpointing: bool = False) -> float:
    """Seconds without progress that count as a hang, learned from recent step times."""
    if not recent_step_seconds or checkpointing:
        return cfg.timeout_s
    return min(cfg.timeout_s, max(cfg.floor_s, cfg.step_multiple * statistics.median(recent_step_seconds)))


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


def _waiting_in(obs: Sequence[RankObservation], culprits: set[int]) -> tuple[str, str | None, int] | None:
    """(process group, collective kind, sequence) that the other ranks are blocked in."""
    votes: dict[tuple[str, str | None, int], int] = {}
    for o in obs:
        if o.rank in culprits:
            continue
        for pg, c in o.collectives.items():
            if c.get("enqueued", -1) > c.get("completed", -1):
                key = (pg, c.get("op"), int(c["enqueued"]))
                votes[key] = votes.get(key, 0) + 1
    return max(votes, key=lambda k: (votes[k], k[2])) if votes else None


def _collective_laggards(obs: Sequence[RankObservation]) -> list[RankObservation]:
    """Ranks whose last enqueued collective on some group trails the rest of that group."""
    lag: dict[int, int] = {}
    groups: dict[str, list[tuple[RankObservation, int]]] = {}
    for o in obs:
        for pg, c in o.collectives.items():
            groups.setdefault(pg, []).append((o, int(c.get("enqueued", -1))))
    for members in groups.values():
        top = max(seq for _, seq in members)
        for o, seq in members:
            if seq < top:
                lag[o.rank] = max(lag.get(o.rank, 0), top - seq)
    by_rank = {o.rank: o for o in obs}
    return [by_rank[r] for r in sorted(lag, key=lambda r: -lag[r])]


def detect_hang(obs: Sequence[RankObservation], last_progress_at: float, now: float,
                limit_s: float) -> Finding | None:
    if now - last_progress_at <= limit_s:
        return None
    live = [o for o in obs if o.worker_alive]
    frozen = [o for o in live if o.stopped or (o.heartbeat is not None and now - o.heartbeat > HEARTBEAT_STALE_S)]
    if frozen:
        culprits, why = frozen, "its process is stopped" if frozen[0].stopped else "its beacons stopped"
    else:
        culprits = _collective_laggards(live)[:1]
        why = "its collective sequence lags the others'"
        if not culprits:
            culprits = [min(live, key=lambda o: o.step)] if live else []
            why = "it is the furthest behind"
    c = culprits[0] if culprits else None
    waiting = _waiting_in(live, {x.rank for x in culprits})
    where = ""
    if waiting is not None:
        pg, op, seq = waiting
        where = f"; the other ranks wait in {op or 'a collective'} #{seq} on process group {pg}"
    fault_at = last_progress_at
    if c is not None and c.heartbeat is not None and (c.stopped or now - c.heartbeat > HEARTBEAT_STALE_S):
        fault_at = min(max(c.heartbeat, last_progress_at), now)
    summary = (f"no step completed for {now - last_progress_at:.1f} s (limit {limit_s:.1f} s); "
               + (f"rank {c.rank} on host {c.host} is the culprit: {why}" if c else "no rank stands out") + where)
    return Finding(FindingKind.HANG, tuple(x.rank for x in culprits), tuple(dict.fromkeys(x.host for x in culprits)),
                   fault_at, now, summary,
                   evidence={"waiting_in": list(waiting) if waiting else None, "limit_s": limit_s,
                             "steps": {o.rank: o.step for o in obs},
                             "frozen": [o.rank for o in frozen]})


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
