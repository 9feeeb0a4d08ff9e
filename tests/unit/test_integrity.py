"""The SDC check's judgement and the loss guard, as pure functions."""

from __future__ import annotations

import math

from trainer.integrity import LossGuard, all_agree, judge


def test_replicas_that_agree_within_reduction_noise_pass() -> None:
    assert all_agree([1234.5678, 1234.5678 * (1 + 1e-9), 1234.5678])
    assert not all_agree([1234.5678, 1234.58])
    assert not all_agree([math.nan, math.nan])


def test_two_replicas_the_replay_tells_which_one_was_wrong() -> None:
    v = judge([100.0, 100.1], [100.0, 100.0])
    assert not v.ok and v.culprits == (1,)
    v = judge([100.3, 100.0], [100.0, 100.0])
    assert v.culprits == (0,)


def test_a_persistently_wrong_replica_is_named_among_three() -> None:
    v = judge([5.0, 5.0, 7.0], [5.0, 5.0, 7.0])
    assert v.culprits == (2,)


def test_no_majority_names_nobody() -> None:
    v = judge([5.0, 7.0], [5.0, 7.0])
    assert not v.ok and v.culprits == () and "no value" in v.message


def test_loss_guard_nan_inf_and_spikes() -> None:
    g = LossGuard(spike_factor=3.0, window=4)
    assert g.bad(math.nan) is not None and g.bad(math.inf) is not None
    for x in (2.0, 2.1, 1.9, 2.0):
        assert g.bad(x) is None
    assert g.bad(5.0) is None  # 5.0 < 3 x median 2.0
    assert "spiked" in (g.bad(9.0) or "")
    off = LossGuard(spike_factor=0.0, window=2)
    assert [off.bad(x) for x in (1.0, 1.0, 100.0)] == [None, None, None]
