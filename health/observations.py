"""What the health agents observe about ranks, and what they conclude (Findings).

Plain dataclasses: the detectors are pure functions over these, so the agent,
the controller, the simulation and the tests all drive the same code.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field, replace
from typing import Any


@dataclass(frozen=True, slots=True)
class RankObservation:
    """One rank at one moment, as its node's agent saw it."""

    rank: int
    host: str
    observed_at: float
    alive: bool
    """The trainer process exists and has not exited."""
    worker_alive: bool = True
    """The supervising actor answered (False: the actor or its node is gone)."""
    returncode: int | None = None
    signal: str | None = None
    exited_at: float | None = None
    stopped: bool = False
    """The process is in the stopped state (SIGSTOP)."""
    step: int = 0
    step_seconds: float | None = None
    heartbeat: float | None = None
    """Time of the rank's newest beacon of any kind."""
    collectives: dict[str, dict[str, Any]] = field(default_factory=dict)
    ready: tuple[tuple[int, float], ...] = ()
    """(step, time the rank was ready to communicate) for recent steps."""
    phase: str = ""
    loss: float | None = None
    tokens_per_second: float | None = None
    checkpoint: dict[str, Any] = field(default_factory=dict)
    """Newest committed checkpoint this rank reported (step, path, blocked and save seconds) and its failed
    saves (count, last error, step, consecutive failures)."""
    error: str | None = None
    """The one-line reason a rank gave for exiting with an error (e.g. no committed checkpoint loads)."""
    rollback: dict[str, Any] = field(default_factory=dict)
    """The rank's newest loss-guard rollback: count, at_step, to_step, skipped_batches, reason, time."""
    resumed: dict[str, Any] = field(default_factory=dict)
    """What the rank's attempt resumed from: kind (snapshot or checkpoint), step, path."""
    groups: dict[str, dict[str, Any]] = field(default_factory=dict)
    """Process group name -> {"dim", "ranks"} for the groups this rank is in."""
    p2p: tuple[dict[str, Any], ...] = ()
    """Pipeline channels: {"chan", "role" (send|recv), "peer", "posted", "done"}."""
    at: str = ""
    """The rank's last place in its step (step, forward, backward, collective, p2p)."""
    at_time: float | None = None
    recorder: dict[str, Any] = field(default_factory=dict)
    """The rank's flight recorder: {"backend", "state" (ok | off | empty | unreadable), "entries", "detail"}."""
    snapshot_step: int | None = None
    """The newest step this rank holds an in-memory snapshot of (None: none, or snapshots off)."""
    snapshots: dict[str, float] = field(default_factory=dict)
    """What this attempt's snapshots cost the rank so far: count, blocked_s (the loop's wait), write_s."""
    saving_step: int | None = None
    """The newest step at which this rank began a save (a checkpoint or a snapshot): that step and the next wait
    for it, so the hang detector judges them against save steps."""


class FindingKind(enum.StrEnum):
    CRASH = "crash"
    NODE_LOST = "node_lost"
    HANG = "hang"
    STRAGGLER = "straggler"
    BAD_GPU = "bad_gpu"


INTERRUPTING = frozenset({FindingKind.CRASH, FindingKind.NODE_LOST, FindingKind.HANG, FindingKind.BAD_GPU})


@dataclass(frozen=True, slots=True)
class Finding:
    kind: FindingKind
    ranks: tuple[int, ...]
    hosts: tuple[str, ...]
    fault_at: float
    """Best estimate of when the fault happened."""
    detected_at: float
    summary: str
    """One line naming the culprit and the evidence."""
    score: float | None = None
    evidence: dict[str, Any] = field(default_factory=dict)

    @property
    def interrupting(self) -> bool:
        return self.kind in INTERRUPTING

    def to_dict(self) -> dict[str, Any]:
        return {"kind": self.kind.value, "ranks": list(self.ranks), "hosts": list(self.hosts),
                "fault_at": self.fault_at, "detected_at": self.detected_at, "summary": self.summary,
                "score": self.score, "evidence": self.evidence}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Finding:
        return cls(FindingKind(d["kind"]), tuple(d["ranks"]), tuple(d["hosts"]), d["fault_at"],
                   d["detected_at"], d["summary"], d.get("score"), d.get("evidence", {}))


def observation_from_poll(poll: dict[str, Any], host: str, now: float) -> RankObservation:
    """Build an observation from a RankWorker poll (process state plus latest beacon)."""
    b = poll.get("beacon") or {}
    return RankObservation(
        rank=poll["rank"], host=host, observed_at=now, alive=bool(poll.get("running")),
        worker_alive=poll.get("worker_alive", True), returncode=poll.get("returncode"),
        signal=poll.get("signal"), exited_at=poll.get("exited_at"), stopped=bool(poll.get("stopped")),
        step=int(b.get("step", 0) or 0), step_seconds=b.get("step_seconds"),
        heartbeat=b.get("time"), collectives=b.get("collectives") or {},
        ready=tuple((int(s), float(t)) for s, t in b.get("ready") or ()), phase=b.get("phase", ""),
        loss=b.get("loss"), tokens_per_second=b.get("tokens_per_second"),
        checkpoint={k: b[k] for k in ("checkpoint_step", "checkpoint_path", "checkpoint_blocked_s",
                                      "checkpoint_seconds", "checkpoint_failures", "checkpoint_error",
                                      "checkpoint_failed_step", "checkpoint_consecutive_failures") if k in b},
        error=b.get("error") if b.get("phase") == "failed" else None,
        rollback=b.get("rollback") or {},
        resumed=b.get("resumed") or {},
        groups=b.get("groups") or {}, p2p=tuple(b.get("p2p") or ()), at=b.get("at", ""),
        at_time=b.get("at_time") or None, recorder=b.get("recorder") or {},
        saving_step=None if b.get("saving_step") is None else int(b["saving_step"]),
        snapshot_step=None if b.get("snapshot_step") is None else int(b["snapshot_step"]),
        snapshots=b.get("snapshots") or {},
    )


def retimed(o: RankObservation, offset_s: float) -> RankObservation:
    """`o` with every time its host wrote moved onto another clock: that clock = the host's - `offset_s`.

    Hosts have their own clocks; the controller compares times only after this.
    Durations (step seconds, checkpoint seconds) need no change.
    """
    if not offset_s:
        return o
    return replace(o, observed_at=o.observed_at - offset_s,
                   exited_at=None if o.exited_at is None else o.exited_at - offset_s,
                   heartbeat=None if o.heartbeat is None else o.heartbeat - offset_s,
                   ready=tuple((s, t - offset_s) for s, t in o.ready),
                   at_time=None if o.at_time is None else o.at_time - offset_s)
