"""The restart policy: a pure function from what happened to what to do next.

No Ray, no clock, no catalog: the controller and the simulation both call
`decide` with plain data, and tests drive it with plain data.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import Any


class OutcomeKind(enum.StrEnum):
    SUCCEEDED = "succeeded"
    CRASH = "crash"
    HANG = "hang"
    NODE_LOST = "node_lost"
    STRAGGLER = "straggler"
    BAD_GPU = "bad_gpu"
    CONTROLLER_LOST = "controller_lost"
    PLACEMENT_FAILED = "placement_failed"
    STOPPED = "stopped"


class Action(enum.StrEnum):
    SUCCEED = "succeed"
    RESTART = "restart"
    FAIL = "fail"
    STOP = "stop"


HARDWARE_KINDS = frozenset({OutcomeKind.NODE_LOST, OutcomeKind.BAD_GPU})


@dataclass(frozen=True, slots=True)
class AttemptOutcome:
    """How one attempt ended, as the controller observed it."""

    kind: OutcomeKind
    committed_step: int
    """Newest committed checkpoint step when the attempt ended."""
    start_step: int
    """Step the attempt resumed from."""
    culprit_ranks: tuple[int, ...] = ()
    culprit_hosts: tuple[str, ...] = ()
    hardware_suspected: bool = False
    detail: str = ""
    finding: dict[str, Any] | None = None
    """The Finding that ended the attempt (Finding.to_dict()), if any."""


@dataclass(frozen=True, slots=True)
class PolicyConfig:
    max_restarts: int
    crash_loop_attempts: int = 3
    """End the job when this many consecutive failed attempts committed no new checkpoint."""
    spares_available: int = 0
    allow_shrink_dp: bool = False


@dataclass(frozen=True, slots=True)
class Decision:
    action: Action
    reason: str
    cordon_hosts: tuple[str, ...] = ()
    use_spare: bool = False


@dataclass(slots=True)
class JobHistory:
    restarts: int = 0
    outcomes: list[AttemptOutcome] = field(default_factory=list)


def _crash_loop(history: JobHistory, n: int) -> bool:
    failed = [o for o in history.outcomes if o.kind not in (OutcomeKind.SUCCEEDED, OutcomeKind.STOPPED)]
    if len(failed) < n:
        return False
    recent = failed[-n:]
    return all(o.committed_step <= o.start_step for o in recent)


def decide(outcome: AttemptOutcome, history: JobHistory, cfg: PolicyConfig) -> Decision:
    """What to do after `outcome`; `history` already includes it."""
    if outcome.kind is OutcomeKind.SUCCEEDED:
        return Decision(Action.SUCCEED, "every rank finished all steps")
    if outcome.kind is OutcomeKind.STOPPED:
        return Decision(Action.STOP, outcome.detail or "stopped by the operator")
    cordon = outcome.culprit_hosts if (outcome.hardware_suspected or outcome.kind in HARDWARE_KINDS) else ()
    if history.restarts >= cfg.max_restarts:
        return Decision(Action.FAIL, f"{outcome.kind.value}: {outcome.detail}; the restart budget is spent "
                        f"(reliability.max_restarts={cfg.max_restarts})", cordon)
    if _crash_loop(history, cfg.crash_loop_attempts):
        return Decision(Action.FAIL, f"crash loop: {cfg.crash_loop_attempts} consecutive attempts ended "
                        f"without committing a new checkpoint (last: {outcome.kind.value}: {outcome.detail})",
                        cordon)
    use_spare = bool(cordon) and cfg.spares_available > 0
    swap = f"; cordoning {', '.join(cordon)} and swapping in a spare host" if use_spare else (
        f"; cordoning {', '.join(cordon)}" if cordon else "")
    return Decision(Action.RESTART, f"{outcome.kind.value}: {outcome.detail}{swap}; restarting from the newest "
                    f"committed checkpoint (restart {history.restarts + 1} of {cfg.max_restarts})",
                    cordon, use_spare=use_spare)


def shrunk_dp(*, dp: int, model_parallel: int, global_batch: int, micro_batch: int, slots: int) -> int | None:
    """The largest data-parallel degree below `dp` that fits `slots` ranks and divides the batch.

    `model_parallel` is tp*pp*cp: a data-parallel replica is lost or kept whole.
    Returns None when not even one replica fits.
    """
    for d in range(dp - 1, 0, -1):
        if d * model_parallel <= slots and global_batch % d == 0 and (global_batch // d) % micro_batch == 0:
            return d
    return None
