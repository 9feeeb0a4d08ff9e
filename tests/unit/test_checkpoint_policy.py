from __future__ import annotations

import math

import pytest

from orchestrator.controller.checkpoint_policy import IntervalInput, choose_interval, daly_interval_s


def test_daly_is_young_plus_small_corrections() -> None:
    c, m = 10.0, 3600.0
    young = math.sqrt(2 * c * m)
    assert daly_interval_s(c, m) == pytest.approx(young * (1 + math.sqrt(c / (2 * m)) / 3 + c / (2 * m) / 9) - c)
    assert abs(daly_interval_s(c, m) - young) < 0.05 * young
    assert daly_interval_s(5000.0, 1000.0) == 1000.0  # cost beyond 2M: checkpoint once per MTBF


def _inp(**kw) -> IntervalInput:
    base = dict(failures=0, exposure_s=0.0, save_cost_s=0.02, save_duration_s=0.5, step_s=0.4,
                prior_mtbf_s=3600.0, min_steps=5, max_steps=500)
    base.update(kw)
    return IntervalInput(**base)


def test_more_failures_mean_more_frequent_checkpoints() -> None:
    calm = choose_interval(_inp(failures=0, exposure_s=3600))
    stormy = choose_interval(_inp(failures=80, exposure_s=3600))  # one every 45 s
    assert stormy.steps < calm.steps
    assert stormy.mtbf_s == pytest.approx(3600 / 80)
    assert calm.mtbf_s == pytest.approx(3600 + 3600)  # no failure yet: the prior plus the time survived
    # sqrt(2 * 0.02 * 45) = 1.34 s of 0.4-s steps is 3 steps; the floor (min 5, save 0.5 s) keeps it at 5.
    assert stormy.steps == 5 and "80 failures" in stormy.reason


def test_a_storm_is_not_outweighed_by_the_prior() -> None:
    """Seven failures in seven minutes mean one a minute, whatever the prior said (a day, here)."""
    d = choose_interval(_inp(failures=7, exposure_s=420, prior_mtbf_s=86_400, save_cost_s=0.05, step_s=0.3,
                             min_steps=1, save_duration_s=0.3))
    assert d.mtbf_s == pytest.approx(60)
    assert d.steps == round(daly_interval_s(0.05, 60) / 0.3)  # about 8 steps, not about 100


def test_bounds_and_the_save_duration_floor() -> None:
    assert choose_interval(_inp(failures=0, exposure_s=1e7)).steps == 500
    slow_save = choose_interval(_inp(failures=80, exposure_s=3600, save_duration_s=8.0))
    assert slow_save.steps == 20  # saves cannot come closer than they finish: 8 s / 0.4 s


def test_only_failures_the_snapshots_did_not_cover_set_the_checkpoint_interval() -> None:
    from types import SimpleNamespace as A

    from orchestrator.controller.recovery import snapshot_covered

    attempts = [
        A(number=1, state="failed", layout={"snapshot_step": 30}),
        A(number=2, state="failed", layout={"resumed_from": {"kind": "snapshot", "step": 30}}),  # 1 covered
        A(number=3, state="lost", layout={"resumed_from": {"kind": "checkpoint", "step": 20}}),  # 2 was not
        A(number=4, state="failed", layout={"resumed_from": {"kind": "snapshot"}, "snapshot_step": 45}),
    ]
    # 3 was covered (4 resumed from a snapshot); 4 has no successor yet: covered while its snapshot is newer
    # than the newest checkpoint.
    assert snapshot_covered(attempts, committed_step=40) == 3
    assert snapshot_covered(attempts, committed_step=45) == 2
    assert snapshot_covered([A(number=1, state="succeeded", layout={})], 0) == 0
