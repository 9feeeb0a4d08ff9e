from __future__ import annotations

import pytest

from orchestrator.controller.failure_policy import (
    AttemptOutcome,
    FailureAction,
    FailureConfig,
    JobHistory,
    OutcomeKind,
    Verdict,
    decide,
)

CFG = FailureConfig(max_restarts=3, window_s=3600, crash_loop_attempts=3, cordon_confidence=0.75)


def _run(outcomes: list[AttemptOutcome], cfg: FailureConfig = CFG, **kw) -> list[FailureAction]:
    h = JobHistory()
    out = []
    for o in outcomes:
        h.outcomes.append(o)
        out.append(decide(o, h, cfg, **kw).action)
    return out


def crash(i: int, *, at: float | None = None, progress: bool = True, **kw) -> AttemptOutcome:
    start = 10 * i
    return AttemptOutcome(OutcomeKind.CRASH, start + (10 if progress else 0), start, (0,), ("h1",),
                          at_s=at if at is not None else 100.0 * i, step_at_fault=start + 5, **kw)


def test_success_and_planned_stop() -> None:
    assert _run([AttemptOutcome(OutcomeKind.SUCCEEDED, 10, 0)]) == [FailureAction.SUCCEED]
    assert _run([AttemptOutcome(OutcomeKind.STOPPED, 5, 0)]) == [FailureAction.STOP]


def test_budget_counts_failures_inside_the_window_only() -> None:
    assert _run([crash(i) for i in range(4)]) == [FailureAction.RETRY] * 3 + [FailureAction.FAIL]
    spread = [crash(i, at=i * 2000.0) for i in range(8)]  # at most two in any hour
    assert _run(spread) == [FailureAction.RETRY] * 8


def test_crash_loop_stops_before_the_budget() -> None:
    stuck = [crash(i, progress=False) for i in range(3)]
    assert _run(stuck, FailureConfig(max_restarts=100)) == [FailureAction.RETRY, FailureAction.RETRY,
                                                             FailureAction.FAIL]


def test_same_signature_at_same_step_is_deterministic() -> None:
    a = AttemptOutcome(OutcomeKind.CRASH, 10, 0, at_s=1, step_at_fault=7, signature="ValueError: bad #")
    b = AttemptOutcome(OutcomeKind.CRASH, 10, 10, at_s=2, step_at_fault=7, signature="ValueError: bad #")
    other_step = AttemptOutcome(OutcomeKind.CRASH, 10, 10, at_s=2, step_at_fault=8, signature="ValueError: bad #")
    assert _run([a, b], FailureConfig(max_restarts=100)) == [FailureAction.RETRY, FailureAction.FAIL]
    assert _run([a, other_step], FailureConfig(max_restarts=100)) == [FailureAction.RETRY] * 2


def test_config_error_fails_at_once() -> None:
    o = AttemptOutcome(OutcomeKind.CONFIG_ERROR, 0, 0, (0,), ("h1",))
    d = decide(o, JobHistory([o]), CFG)
    assert d.action is FailureAction.FAIL and "configuration error" in d.reason


@pytest.mark.parametrize(("verdict", "cordon", "suspect"), [
    (Verdict("faulty_gpu", 0.95), ("h1",), ()),
    (Verdict("faulty_gpu", 0.5), (), ("h1",)),
    (Verdict("software_bug", 0.9), (), ()),
    (Verdict("unknown", 0.0), (), ()),
])
def test_the_verdict_alone_decides_cordon_or_suspect(verdict: Verdict, cordon: tuple, suspect: tuple) -> None:
    o = crash(1)
    d = decide(o, JobHistory([o]), CFG, verdict)
    assert d.action is FailureAction.RETRY
    assert d.cordon_hosts == cordon and d.suspect_hosts == suspect


def test_lost_node_is_cordoned_whatever_the_classifier_says() -> None:
    o = AttemptOutcome(OutcomeKind.NODE_LOST, 10, 0, (2,), ("h2",))
    assert decide(o, JobHistory([o]), CFG, Verdict("unknown", 0.0)).cordon_hosts == ("h2",)


def test_lemon_hosts_are_cordoned_with_the_culprit() -> None:
    o = crash(1)
    d = decide(o, JobHistory([o]), CFG, Verdict("software_bug", 0.9), hardware_counts={"h7": 2, "h8": 1})
    assert d.cordon_hosts == ("h7",) and d.lemon_hosts == ("h7",) and "lemon" in d.reason


def test_reason_names_the_setting_that_stopped_the_job() -> None:
    h = JobHistory()
    d = None
    for i in range(4):
        h.outcomes.append(crash(i))
        d = decide(h.outcomes[-1], h, CFG)
    assert d is not None and "reliability.max_restarts=3" in d.reason


def test_unrelated_failures_faster_than_checkpoints_are_not_a_crash_loop() -> None:
    cfg = FailureConfig(max_restarts=100)
    hosts = ["h1", "h2", "h3", "h4"]
    unrelated = [AttemptOutcome(OutcomeKind.CRASH, 10, 10, (0,), (h,), at_s=i, category="faulty_gpu")
                 for i, h in enumerate(hosts)]
    assert _run(unrelated, cfg) == [FailureAction.RETRY] * 4
    same = [AttemptOutcome(OutcomeKind.CRASH, 10, 10, (0,), ("h1",), at_s=i, category="faulty_gpu")
            for i in range(3)]
    assert _run(same, cfg)[-1] is FailureAction.FAIL


def test_a_host_already_cordoned_is_not_cordoned_again() -> None:
    o = AttemptOutcome(OutcomeKind.NODE_LOST, 10, 0, (2,), ("h2",))
    d = decide(o, JobHistory([o]), CFG, Verdict("unknown", 0.0), hardware_counts={"h2": 3, "h7": 2},
               cordoned=frozenset({"h2", "h7"}))
    assert d.cordon_hosts == () and d.lemon_hosts == ()
