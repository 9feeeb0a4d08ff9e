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
    assert stormy.mtbf_s == pytest.approx(7200 / 81)
    # sqrt(2 * 0.02 * 88.9) = 1.89 s of 0.4-s steps is 5 steps; the floor (min 5, save 0.5 s) keeps it there.
    assert stormy.steps == 5 and "80 failures" in stormy.reason


def test_bounds_and_the_save_duration_floor() -> None:
    assert choose_interval(_inp(failures=0, exposure_s=1e7)).steps == 500
    slow_save = choose_interval(_inp(failures=80, exposure_s=3600, save_duration_s=8.0))
    assert slow_save.steps == 20  # saves cannot come closer than they finish: 8 s / 0.4 s
