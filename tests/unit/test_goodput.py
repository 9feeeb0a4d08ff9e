from __future__ import annotations

import pytest

from orchestrator.goodput import InterruptionView, ettr_series, goodput, split_rows, table5


def _rows() -> list[dict]:
    rows, t = [], 100.0
    for s in range(1, 7):  # attempt 1: steps 1..6, crash, resume from 4
        t += 1.0
        rows.append({"step": s, "step_seconds": 1.0, "time": t, "attempt": 1, "checkpoint_blocked_seconds": 0.0})
    t += 10.0  # detection + restart
    for s in range(5, 9):
        t += 1.0
        blocked = 0.2 if s == 8 else 0.0
        rows.append({"step": s, "step_seconds": 1.0, "time": t, "attempt": 2, "checkpoint_blocked_seconds": blocked})
    return rows


def _crash() -> InterruptionView:
    return InterruptionView(1, "crash", "faulty_gpu", "gpu", False, fault_at=106.5, detected_at=107.0,
                            stopped_at=108.0, resumed_at=117.0, steps_lost=2, hosts=("h1",))


def test_split_keeps_last_version_of_each_step() -> None:
    alive, redone = split_rows(_rows())
    assert [r["step"] for r in alive] == list(range(1, 9))
    assert [(r["step"], r["attempt"]) for r in redone] == [(5, 1), (6, 1)]


def test_goodput_breakdown_adds_up() -> None:
    g = goodput(100.0, 121.0, _rows(), [_crash()])
    assert g["productive_seconds"] == pytest.approx(8 - 0.2)
    lost = g["time_lost_seconds"]
    assert lost["lost_work"] == pytest.approx(2.0)
    assert lost["detection"] == pytest.approx(0.5)
    assert lost["restart"] == pytest.approx(10.0)
    assert lost["checkpoint_stall"] == pytest.approx(0.2)
    # Only the half second between the last step and the fault is left unexplained: a cause that
    # stops being counted shows up here instead of vanishing into the remainder.
    assert lost["unattributed"] == pytest.approx(0.5)
    assert lost["startup"] == pytest.approx(0.0)
    assert g["ettr"] == pytest.approx(7.8 / 21.0)


def test_planned_and_stragglers_are_not_failures() -> None:
    planned = InterruptionView(2, "operator_stop", "unknown", "unknown", True, 1, 1, 1, 2, 0)
    slow = InterruptionView(3, "straggler", "unknown", "unknown", False, 1, 1, None, None, 0)
    t = table5([_crash(), planned, slow], _rows(), 3600.0)
    assert t["unexpected_interruptions"] == 1 and t["planned_interruptions"] == 1 and t["stragglers"] == 1
    assert t["categories"] == [{"category": "faulty_gpu", "component": "gpu", "count": 1, "share": 1.0,
                                "time_lost_seconds": pytest.approx(10.5 + 2.0)}]
    assert t["mtbf_seconds"] == 3600.0


def test_a_failed_checkpoint_save_is_not_an_interruption() -> None:
    failed_save = InterruptionView(4, "checkpoint_failed", "unknown", "unknown", False, 103.0, 103.0, None, None, 0)
    t = table5([_crash(), failed_save], _rows(), 3600.0)
    assert t["unexpected_interruptions"] == 1 and t["checkpoint_failures"] == 1 and t["stragglers"] == 0
    assert goodput(100.0, 121.0, _rows(), [_crash(), failed_save]) == goodput(100.0, 121.0, _rows(), [_crash()])


def test_ettr_series_drops_rolled_back_steps() -> None:
    s = ettr_series(100.0, _rows())
    assert len(s) == 10
    assert s[6][1] < s[5][1]  # the restart shows as a dip


def test_preflight_is_its_own_cause_carved_out_of_startup_and_restart() -> None:
    # Started at 95: 5 s before the first step (2 s of it preflight); the 10 s restart held a 3 s preflight.
    g = goodput(95.0, 121.0, _rows(), [_crash()], [2.0, 3.0])
    lost = g["time_lost_seconds"]
    assert lost["preflight"] == pytest.approx(5.0)
    assert lost["startup"] == pytest.approx(3.0) and lost["restart"] == pytest.approx(7.0)
    assert g["productive_seconds"] + sum(lost.values()) == pytest.approx(g["wall_seconds"])
    assert goodput(95.0, 121.0, _rows(), [_crash()])["time_lost_seconds"]["preflight"] == 0.0


def _ettr_series_by_definition(started_at: float, rows: list[dict]) -> list[tuple[float, float]]:
    """The series as DESIGN.md defines it, recomputed from scratch after every row (quadratic)."""
    out = []
    for n, r in enumerate(rows, start=1):
        kept: dict[int, float] = {}
        for x in rows[:n]:
            kept = {s: v for s, v in kept.items() if s < x["step"]}
            kept[x["step"]] = x["step_seconds"] - x.get("checkpoint_blocked_seconds", 0.0)
        if r["time"] > started_at:
            out.append((r["time"], sum(kept.values()) / (r["time"] - started_at)))
    return out


def test_ettr_series_matches_its_definition_over_many_restarts() -> None:
    import random

    rng = random.Random(7)
    rows, step, t = [], 0, 100.0
    for _ in range(250):
        if rng.random() < 0.05:
            step = max(0, step - rng.randint(1, 30))  # a restart rolls back to an earlier checkpoint
        step += 1
        t += rng.uniform(0.5, 2.0)
        rows.append({"step": step, "step_seconds": rng.uniform(0.4, 1.5), "time": t,
                     "checkpoint_blocked_seconds": rng.choice([0.0, 0.0, 0.1])})
    got, want = ettr_series(99.0, rows), _ettr_series_by_definition(99.0, rows)
    assert [x for x, _ in got] == [x for x, _ in want]
    assert [e for _, e in got] == pytest.approx([e for _, e in want], rel=1e-9)
