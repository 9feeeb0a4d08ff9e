"""The failure policy: after an attempt ends, what to do next and which hosts to take out.

Pure: no Ray, no clock, no catalog. The controller, the simulation and the tests
call `decide` with plain data (the attempt's outcome, the job's history, the
classifier's verdict and the hosts' hardware record) and carry out the decision
without deciding again.

The retry budget is a rate, not a lifetime count: at most `max_restarts`
unexpected interruptions within `window_s` (a 54-day job sees several a day and
must never run out). Two things end a job at once instead of burning the budget:
a crash loop (consecutive attempts that commit nothing new) and a deterministic
failure (the same error at the same step twice, or a configuration error raised
by a rank), because retrying those only repeats them.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import Any

from orchestrator.taxonomy import HARDWARE_CATEGORIES


class OutcomeKind(enum.StrEnum):
    SUCCEEDED = "succeeded"
    CRASH = "crash"
    HANG = "hang"
    NODE_LOST = "node_lost"
    BAD_GPU = "bad_gpu"
    CONFIG_ERROR = "config_error"
    CONTROLLER_LOST = "controller_lost"
    PLACEMENT_FAILED = "placement_failed"
    PREFLIGHT = "preflight"
    """A candidate host failed the checks before its ranks started."""
    STOPPED = "stopped"

    @property
    def failed(self) -> bool:
        return self not in (OutcomeKind.SUCCEEDED, OutcomeKind.STOPPED)


LOST_HOST_KINDS = frozenset({OutcomeKind.NODE_LOST, OutcomeKind.PREFLIGHT})
"""Kinds whose culprit host is gone or broken whatever the classifier says."""


class FailureAction(enum.StrEnum):
    SUCCEED = "succeed"
    RETRY = "retry"
    FAIL = "fail"
    STOP = "stop"


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
    detail: str = ""
    finding: dict[str, Any] | None = None
    """The Finding that ended the attempt (Finding.to_dict()), if any."""
    at_s: float = 0.0
    """When the attempt ended (seconds on the controller's clock)."""
    step_at_fault: int = 0
    """The furthest step the job had reached when it failed."""
    signature: str = ""
    """A normalised error signature (exception line of the culprit's log), empty when none."""
    category: str = ""
    """The classifier's category for it, once classified."""


@dataclass(frozen=True, slots=True)
class Verdict:
    """The classifier's answer, reduced to what the policy needs."""

    category: str = "unknown"
    confidence: float = 0.0

    @property
    def hardware(self) -> bool:
        return self.category in HARDWARE_CATEGORIES


@dataclass(frozen=True, slots=True)
class FailureConfig:
    """Args:
    max_restarts: unexpected interruptions allowed within `window_s` before the job fails.
    window_s: length of the sliding window of the retry budget.
    crash_loop_attempts: consecutive failed attempts that committed nothing new: a crash loop.
    cordon_confidence: a hardware verdict at or above this confidence cordons the culprit host;
        below it the host is only marked suspect and watched.
    lemon_threshold: hardware interruptions of one host (in the catalog's lemon window) that make it a lemon.
    """

    max_restarts: int
    window_s: float = 86_400.0
    crash_loop_attempts: int = 3
    cordon_confidence: float = 0.8
    """Calibrated with the classifier (orchestrator/classifier.py CORDON_CONFIDENCE): one specific hardware
    signature scores 0.85-0.95, an inferred verdict 0.6-0.75."""
    lemon_threshold: int = 2

    def __post_init__(self) -> None:
        if self.max_restarts < 0 or self.window_s <= 0 or self.crash_loop_attempts < 1:
            raise ValueError(f"invalid failure policy config: {self}")


@dataclass(slots=True)
class JobHistory:
    """Every attempt outcome of the job so far, rebuilt from the catalog after a controller restart."""

    outcomes: list[AttemptOutcome] = field(default_factory=list)

    def failures_within(self, now_s: float, window_s: float) -> list[AttemptOutcome]:
        return [o for o in self.outcomes if o.kind.failed and now_s - o.at_s <= window_s]


@dataclass(frozen=True, slots=True)
class FailureDecision:
    action: FailureAction
    reason: str
    cordon_hosts: tuple[str, ...] = ()
    """Hosts to cordon now (hardware verdict with confidence, a lost node, or a lemon)."""
    suspect_hosts: tuple[str, ...] = ()
    """Hosts a low-confidence hardware verdict points at: watched, still used."""
    lemon_hosts: tuple[str, ...] = ()
    """The subset of `cordon_hosts` cordoned for their repeated hardware faults."""


def failure_key(o: AttemptOutcome) -> tuple[str, ...]:
    """What makes two failures "the same": the error when one was seen, else the kind, verdict and culprit."""
    if o.signature:
        return (o.kind.value, o.signature)
    return (o.kind.value, o.category, *sorted(o.culprit_hosts))


def _crash_loop(history: JobHistory, n: int) -> bool:
    """The same failure `n` times in a row with nothing committed in between.

    Unrelated faults that happen to come faster than checkpoints (different hosts,
    different causes) are not a loop: at 16,384 GPUs they are the everyday case.
    """
    recent: list[AttemptOutcome] = []
    for o in reversed(history.outcomes):
        if not o.kind.failed:
            break
        recent.append(o)
        if len(recent) == n:
            break
    return (len(recent) == n and all(o.committed_step <= o.start_step for o in recent)
            and len({failure_key(o) for o in recent}) == 1)


def _deterministic(outcome: AttemptOutcome, history: JobHistory) -> AttemptOutcome | None:
    """An earlier failure with the same signature at the same step, if any."""
    if not outcome.signature:
        return None
    for o in history.outcomes[:-1]:
        if o.kind.failed and o.signature == outcome.signature and o.step_at_fault == outcome.step_at_fault:
            return o
    return None


def hosts_to_take_out(outcome: AttemptOutcome, verdict: Verdict, cfg: FailureConfig, hardware_counts: dict[str, int],
                      cordoned: frozenset[str] = frozenset()) -> tuple[tuple[str, ...], tuple[str, ...],
                                                                       tuple[str, ...]]:
    """(cordon, suspect, lemons) for this outcome.

    `hardware_counts` is each host's count of hardware interruptions in the lemon
    window since it was last returned to service, this one included; hosts already
    `cordoned` are not cordoned again.
    """
    culprits = tuple(dict.fromkeys(outcome.culprit_hosts))
    if outcome.kind in LOST_HOST_KINDS or (verdict.hardware and verdict.confidence >= cfg.cordon_confidence):
        cordon, suspect = culprits, ()
    elif verdict.hardware:
        cordon, suspect = (), culprits
    else:
        cordon, suspect = (), ()
    lemons = tuple(sorted(h for h, n in hardware_counts.items()
                          if n >= cfg.lemon_threshold and h not in cordon and h not in cordoned))
    cordon = tuple(h for h in cordon if h not in cordoned)
    return cordon + lemons, tuple(h for h in suspect if h not in lemons and h not in cordoned), lemons


def decide(outcome: AttemptOutcome, history: JobHistory, cfg: FailureConfig, verdict: Verdict | None = None,
           hardware_counts: dict[str, int] | None = None, cordoned: frozenset[str] = frozenset()) -> FailureDecision:
    """What to do after `outcome`; `history` already holds it as its last entry."""
    verdict = verdict or Verdict()
    if outcome.kind is OutcomeKind.SUCCEEDED:
        return FailureDecision(FailureAction.SUCCEED, "every rank finished all steps")
    if outcome.kind is OutcomeKind.STOPPED:
        return FailureDecision(FailureAction.STOP, outcome.detail or "stopped by the operator")
    cordon, suspect, lemons = hosts_to_take_out(outcome, verdict, cfg, hardware_counts or {}, cordoned)
    what = f"{outcome.kind.value}: {outcome.detail}" if outcome.detail else outcome.kind.value

    def fail(reason: str) -> FailureDecision:
        return FailureDecision(FailureAction.FAIL, reason, cordon, suspect, lemons)

    if outcome.kind is OutcomeKind.CONFIG_ERROR:
        return fail(f"{what}; a configuration error repeats on every attempt, so the job is not retried")
    same = _deterministic(outcome, history)
    if same is not None:
        return fail(f"deterministic failure: {outcome.signature!r} at step {outcome.step_at_fault} again "
                    f"(first seen in an earlier attempt); retrying would repeat it")
    if _crash_loop(history, cfg.crash_loop_attempts):
        return fail(f"crash loop: the same failure ended {cfg.crash_loop_attempts} consecutive attempts without a new "
                    f"checkpoint committed (last: {what}) (reliability.crash_loop_attempts={cfg.crash_loop_attempts})")
    recent = history.failures_within(outcome.at_s, cfg.window_s)
    if len(recent) > cfg.max_restarts:
        return fail(f"{what}; {len(recent)} unexpected interruptions within {cfg.window_s / 3600:g} h exceed the "
                    f"restart budget (reliability.max_restarts={cfg.max_restarts} per "
                    f"reliability.restart_window_s={cfg.window_s:g})")
    taken = ""
    if cordon:
        taken += f"; cordoning {', '.join(cordon)}"
        if lemons:
            taken += f" ({', '.join(lemons)} as lemon{'s' if len(lemons) > 1 else ''})"
    if suspect:
        taken += f"; marking {', '.join(suspect)} suspect ({verdict.category} at confidence " \
                 f"{verdict.confidence:.2f} < {cfg.cordon_confidence:g})"
    return FailureDecision(FailureAction.RETRY, f"{what}{taken}; restarting from the newest committed checkpoint "
                           f"({len(recent)} of {cfg.max_restarts} restarts used in the last "
                           f"{cfg.window_s / 3600:g} h)", cordon, suspect, lemons)
