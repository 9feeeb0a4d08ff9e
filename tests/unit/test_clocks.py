"""Times written on hosts with their own clocks are compared only on the controller's clock."""

from __future__ import annotations

from health.detectors import detect_hang, detect_stragglers
from health.observations import RankObservation, retimed
from orchestrator.controller.clocks import ClockOffsets

DAY = 86_400.0


def test_offset_comes_from_the_fastest_round_trip() -> None:
    c = ClockOffsets()
    # The node's clock is 3 days ahead; a slow round trip (2 s) misleads by up to 1 s, a fast one by 5 ms.
    assert abs(c.add("n", 100.0, 102.0, 100.2 + 3 * DAY) - (3 * DAY - 0.8)) < 1e-6
    assert abs(c.add("n", 110.0, 110.01, 110.005 + 3 * DAY) - 3 * DAY) < 1e-6
    # A later slow one does not displace the better estimate.
    assert abs(c.add("n", 120.0, 125.0, 120.1 + 3 * DAY) - 3 * DAY) < 1e-6
    assert c.offset("other") == 0.0


def test_window_follows_a_clock_that_was_stepped() -> None:
    c = ClockOffsets(window=3)
    c.add("n", 0.0, 0.001, 50.0)
    for t in (1.0, 2.0, 3.0):
        off = c.add("n", t, t + 0.01, t + 0.005 + 7.0)
    assert abs(off - 7.0) < 1e-6


def _obs(rank: int, host: str, skew: float, now: float, *, heartbeat_age: float, ready_lag: float = 0.0
         ) -> RankObservation:
    return RankObservation(rank=rank, host=host, observed_at=now + skew, alive=True, step=10,
                           heartbeat=now + skew - heartbeat_age,
                           ready=tuple((s, 1000.0 + s + ready_lag + skew) for s in range(1, 11)))


def test_a_host_days_ahead_is_neither_frozen_nor_a_straggler_once_retimed() -> None:
    now = 5000.0
    skews = {"h1": 0.0, "h2": -30.0, "h3": 3 * DAY}
    obs = [_obs(r, h, s, now, heartbeat_age=0.5) for r, (h, s) in enumerate(skews.items())]
    on_ours = [retimed(o, skews[o.host]) for o in obs]
    hung = detect_hang(on_ours, last_progress_at=now - 100, now=now, limit_s=30)
    assert hung is not None and hung.evidence["frozen"] == []
    assert detect_stragglers(on_ours, 1.0, now) == []
    # Compared raw, the skewed clocks would name h2 frozen and h3 a straggler.
    raw = detect_hang(obs, last_progress_at=now - 100, now=now, limit_s=30)
    assert raw is not None and raw.evidence["frozen"] == [1]


def test_a_frozen_rank_on_a_skewed_host_is_still_found() -> None:
    now = 5000.0
    obs = [_obs(0, "h1", 0.0, now, heartbeat_age=0.5), _obs(1, "h3", 3 * DAY, now, heartbeat_age=40.0),
           _obs(2, "h2", 0.0, now, heartbeat_age=0.5)]
    on_ours = [retimed(o, 3 * DAY if o.host == "h3" else 0.0) for o in obs]
    hung = detect_hang(on_ours, last_progress_at=now - 100, now=now, limit_s=30)
    assert hung is not None and hung.ranks == (1,) and hung.hosts == ("h3",)
