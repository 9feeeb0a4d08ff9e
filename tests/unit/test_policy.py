from __future__ import annotations

from orchestrator.controller.policy import (
    Action,
    AttemptOutcome,
    JobHistory,
    OutcomeKind,
    PolicyConfig,
    decide,
)


def _run(outcomes: list[AttemptOutcome], cfg: PolicyConfig) -> list[Action]:
    h = JobHistory()
    actions = []
    for o in outcomes:
        h.outcomes.append(o)
        d = decide(o, h, cfg)
        actions.append(d.action)
        if d.action is Action.RESTART:
            h.restarts += 1
    return actions


def test_success_and_stop() -> None:
    cfg = PolicyConfig(max_restarts=3)
    assert _run([AttemptOutcome(OutcomeKind.SUCCEEDED, 10, 0)], cfg) == [Action.SUCCEED]
    assert _run([AttemptOutcome(OutcomeKind.STOPPED, 5, 0)], cfg) == [Action.STOP]


def test_restart_until_budget_spent() -> None:
    cfg = PolicyConfig(max_restarts=2, crash_loop_attempts=10)
    crashes = [AttemptOutcome(OutcomeKind.CRASH, 10 * (i + 1), 10 * i, (0,), ("h",)) for i in range(3)]
    assert _run(crashes, cfg) == [Action.RESTART, Action.RESTART, Action.FAIL]


def test_crash_loop_without_progress_fails_early() -> None:
    cfg = PolicyConfig(max_restarts=10, crash_loop_attempts=3)
    stuck = [AttemptOutcome(OutcomeKind.CRASH, 20, 20) for _ in range(3)]
    h = JobHistory()
    for o in stuck[:2]:
        h.outcomes.append(o)
        h.restarts += 1
    h.outcomes.append(stuck[2])
    d = decide(stuck[2], h, cfg)
    assert d.action is Action.FAIL and "crash loop" in d.reason


def test_hardware_faults_cordon_the_host() -> None:
    cfg = PolicyConfig(max_restarts=3, spares_available=1)
    o = AttemptOutcome(OutcomeKind.NODE_LOST, 10, 0, (3,), ("node-b",), True, "worker died")
    d = decide(o, JobHistory(outcomes=[o]), cfg)
    assert d.action is Action.RESTART and d.cordon_hosts == ("node-b",) and d.use_spare


def test_software_crash_does_not_cordon() -> None:
    o = AttemptOutcome(OutcomeKind.CRASH, 10, 0, (1,), ("node-a",), False, "exit code 1")
    d = decide(o, JobHistory(outcomes=[o]), PolicyConfig(max_restarts=3))
    assert d.cordon_hosts == ()


def test_shrunk_dp_keeps_whole_replicas_and_the_batch() -> None:
    from orchestrator.controller.policy import shrunk_dp

    assert shrunk_dp(dp=4, model_parallel=1, global_batch=16, micro_batch=2, slots=3) == 2
    assert shrunk_dp(dp=4, model_parallel=2, global_batch=16, micro_batch=2, slots=7) == 2
    assert shrunk_dp(dp=4, model_parallel=2, global_batch=16, micro_batch=2, slots=6) == 2
    assert shrunk_dp(dp=3, model_parallel=1, global_batch=12, micro_batch=4, slots=2) == 1
    assert shrunk_dp(dp=2, model_parallel=4, global_batch=8, micro_batch=1, slots=3) is None
