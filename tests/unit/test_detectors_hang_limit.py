"""The hang limit on a simulated example job, through the controller's pure monitor tick.

A job of 4 synchronous ranks is laid out as step start times; every 0.5 s the
monitor is handed what the ranks' beacons would say at that moment (steps done,
readiness ring, save phase, heartbeat, process stopped or not). Healthy jitter
(saves, garbage-collection pauses, a slightly slowed rank) must never end the
attempt; a stall or a stopped rank must end it within about 3 s.
"""

from __future__ import annotations

import math
import random
import statistics

from health.detectors import HangConfig, hang_limit
from health.observations import FindingKind, RankObservation
from orchestrator.controller.monitor import MonitorState, tick

RANKS = 4
POLL_S = 0.5
SAVE_EVERY = 25


class Job:
    """Step s runs from starts[s-1] to starts[s]; a save step spends its last `save_s[s]` seconds saving."""

    def __init__(self, durations: list[float], save_s: dict[int, float] | None = None, t0: float = 5.0) -> None:
        self.starts = [t0]
        for d in durations:
            self.starts.append(self.starts[-1] + d)
        self.save_s = save_s or {}
        self.frozen_at: float | None = None
        self.sigstop: int | None = None

    def done(self, t: float) -> int:
        cut = t if self.frozen_at is None else min(t, self.frozen_at)
        return sum(1 for end in self.starts[1:] if end <= cut)

    def observe(self, t: float) -> list[RankObservation]:
        done = self.done(t)
        now = t if self.frozen_at is None else min(t, self.frozen_at)
        ready = tuple((s, self.starts[s - 1]) for s in range(max(1, done - 31), done + 1))
        saving_step = max((s for s in self.save_s if s <= len(self.starts) - 1
                           and self.starts[s] - self.save_s[s] <= now), default=None)
        in_save = saving_step is not None and saving_step == done + 1 and now < self.starts[saving_step]
        out = []
        for r in range(RANKS):
            stopped = self.sigstop == r and self.frozen_at is not None and t >= self.frozen_at
            beat = math.floor(t - 0.7) + 0.7  # the beacon thread beats every second, at x.7 s
            if stopped:
                beat = math.floor(self.frozen_at - 0.7) + 0.7  # its last beat before the stop
            out.append(RankObservation(r, f"h{r}", t, True, stopped=stopped, step=done + (1 if in_save else 0),
                                       step_seconds=0.4, heartbeat=beat, ready=ready,
                                       phase="checkpoint" if in_save else "train", saving_step=saving_step))
        return out

    def run(self, until: float) -> float | None:
        """Poll until `until`; the time the attempt was ended for a hang, or None."""
        st = MonitorState(start_step=0, last_progress_at=self.starts[0] - 2.0, total_steps=10_000)
        t = self.starts[0] - 2.0
        while t < until:
            t += POLL_S
            res = tick(st, self.observe(t), [], t, RANKS, HangConfig(timeout_s=60))
            if res.failure is not None:
                assert res.failure.kind is FindingKind.HANG
                return t
        return None


def healthy(n: int, seed: int = 0, step_s: float = 0.45) -> tuple[list[float], dict[int, float]]:
    """Step times as the example job shows them: jitter, a GC pause now and then, slower save steps."""
    rng = random.Random(seed)
    durations, saves = [], {}
    for s in range(1, n + 1):
        d = step_s * rng.uniform(0.85, 1.2)
        if rng.random() < 0.03:
            d += rng.uniform(0.1, 0.3)  # a garbage-collection pause
        if s % SAVE_EVERY == 0:
            saves[s] = rng.uniform(0.05, 0.4)
            d += saves[s]
        elif s % SAVE_EVERY == 1 and s > 1:
            d += rng.uniform(0.0, 0.3)  # waiting for the save's staging
        durations.append(d)
    durations[0] = 2.5  # the first step warms up
    return durations, saves


def test_limit_follows_the_slowest_recent_step() -> None:
    cfg = HangConfig(timeout_s=60)
    assert hang_limit([0.5] * 10, cfg) == 2.0  # 2 x 0.5 + 1
    assert hang_limit([0.4] * 9 + [0.9], cfg) == 2.8
    assert hang_limit([0.1] * 10, cfg) == 1.5  # the floor
    assert hang_limit([30.0] * 10, cfg) == 60.0
    assert hang_limit([0.5, 0.5], cfg) == 60.0  # too little evidence yet
    assert hang_limit([0.5] * 10, cfg, checkpointing=True) == 60.0
    assert hang_limit([0.5] * 10, cfg, sdc_check=True) == 4.0  # a replay may double a check
    assert hang_limit([0.5] * 10, cfg, sdc_check=True, stopped=True) == 0.5  # a stop is a stop


def test_save_steps_are_judged_against_save_steps() -> None:
    cfg = HangConfig(timeout_s=60)
    assert hang_limit([0.5] * 10, cfg, saving=True) == 60.0  # no save seen yet
    assert hang_limit([0.5] * 10, cfg, saving=True, save_step_seconds=[1.2, 2.0]) == 5.0
    assert hang_limit([0.5] * 10, cfg, saving=False, save_step_seconds=[1.2, 2.0]) == 2.0


def test_a_stopped_rank_needs_no_learned_limit_in_any_phase() -> None:
    cfg = HangConfig(timeout_s=60)
    assert hang_limit([], cfg, checkpointing=True, stopped=True) == 0.5
    assert hang_limit([0.5] * 10, cfg, saving=True, stopped=True) == 0.5


def test_healthy_jitter_never_ends_the_attempt() -> None:
    for seed in range(5):
        durations, saves = healthy(300, seed)
        job = Job(durations, saves)
        assert job.run(job.starts[-1] - 0.1) is None, seed


def test_a_rank_slowed_below_the_straggler_threshold_is_no_hang() -> None:
    durations, saves = healthy(300, 1)
    durations = durations[:100] + [d + 0.1 for d in durations[100:]]  # 0.1 s of every step from step 101
    job = Job(durations, saves)
    assert job.run(job.starts[-1] - 0.1) is None


def test_a_slow_save_step_is_no_hang_once_saves_were_seen_that_slow() -> None:
    durations, saves = healthy(120, 2)
    for s in (25, 50, 75, 100):
        saves[s] = 2.0  # a slow disk: every save blocks 2 s, beyond the plain-step limit (about 2 s)
        durations[s - 1] = 0.45 + 2.0
    job = Job(durations, saves)
    assert job.run(job.starts[-1] - 0.1) is None


def test_a_live_stall_is_found_in_about_3_s() -> None:
    latencies = []
    for seed, at_step in enumerate((60, 133, 201, 251, 77, 150, 99, 280)):
        durations, saves = healthy(300, seed)
        job = Job(durations, saves)
        job.frozen_at = job.starts[at_step] + 0.2 * (seed % 3)  # the rank stops; its beacon thread goes on
        found = job.run(job.frozen_at + 30)
        assert found is not None, seed
        latencies.append(found - job.frozen_at)
    assert statistics.median(latencies) <= 3.0 and max(latencies) <= 3.5, latencies


def test_a_stopped_rank_is_found_within_3_s_even_while_saving_or_starting() -> None:
    durations, saves = healthy(120, 3)
    for frozen_at in (durations[0] / 2 + 5.0, None):  # during the first (warm-up) step; in the 50th step's save
        job = Job(durations, saves)
        job.sigstop = 2
        job.frozen_at = frozen_at if frozen_at is not None else job.starts[50] - saves[50] / 2
        found = job.run(job.frozen_at + 70)
        assert found is not None and found - job.frozen_at <= 3.0, (frozen_at, found and found - job.frozen_at)


def test_a_stopped_rank_is_found_within_about_a_second_and_a_blip_is_not() -> None:
    """Seen stopped by two polls in a row with no step since, and the peers beaconed since: a hang, whatever the
    step times say. A process stopped for one poll only (a debugger's attach, job control undone) costs nothing."""
    latencies = []
    for seed, at_step in enumerate((40, 97, 150, 210)):
        durations, saves = healthy(300, seed)
        job = Job(durations, saves)
        job.sigstop = seed % RANKS
        job.frozen_at = job.starts[at_step] + 0.13 * seed
        found = job.run(job.frozen_at + 30)
        assert found is not None, seed
        latencies.append(found - job.frozen_at)
    # Bounded by the peers' next beacon (every second) and two polls; the learned limit's floor alone is 1.5 s.
    assert max(latencies) <= 2.0 and statistics.median(latencies) <= 1.5, latencies

    durations, saves = healthy(120, 5, step_s=1.2)  # steps longer than a poll: some polls see no progress
    job = Job(durations, saves)
    st = MonitorState(start_step=0, last_progress_at=job.starts[0] - 2.0, total_steps=10_000)
    t, blips = job.starts[0] - 2.0, [job.starts[s] + 0.7 for s in range(30, 110, 10)]
    while t < job.starts[-1] - 0.1:
        t += POLL_S
        obs = job.observe(t)
        if any(b <= t < b + POLL_S for b in blips):  # stopped when this one poll looks, running again by the next
            obs[1] = RankObservation(1, "h1", t, True, stopped=True, step=obs[1].step, step_seconds=0.4,
                                     heartbeat=obs[1].heartbeat, ready=obs[1].ready, phase=obs[1].phase)
        assert tick(st, obs, [], t, RANKS, HangConfig(timeout_s=60)).failure is None, t


def test_without_evidence_a_stall_while_saving_waits_for_the_job_timeout() -> None:
    durations, saves = healthy(60, 4)
    job = Job(durations, saves)
    job.frozen_at = job.starts[25] - saves[25] / 2  # inside the attempt's first save: nothing to compare it with
    found = job.run(job.frozen_at + 70)
    assert found is not None and 55 <= found - job.frozen_at <= 62


def test_an_sdc_check_and_its_replay_are_no_hang_and_after_the_verdict_the_exit_decides() -> None:
    """A check every step's end, replayed once on a disagreement: that step takes a check longer than any before
    it. In phase `sdc_check` the limit doubles; once a replica has its verdict (phase `sdc`) the job's timeout
    applies, and a rank stopped in the middle of a check is still a hang after the floor."""
    durations = [2.5] + [0.6] * 59
    job = Job(durations)
    job.frozen_at = job.starts[40]  # step 41's check disagrees; the replay runs past the usual limit
    limit = hang_limit([0.6] * 30, HangConfig(timeout_s=60))
    stall = limit + 0.8  # longer than the limit, within twice it

    def run(phase: str, sigstop: bool = False) -> float | None:
        st = MonitorState(start_step=0, last_progress_at=job.starts[0] - 2.0, total_steps=10_000)
        t = job.starts[0] - 2.0
        while t < job.frozen_at + stall:
            t += POLL_S
            obs = job.observe(t)
            if t > job.frozen_at:
                obs = [RankObservation(o.rank, o.host, t, True, stopped=sigstop and o.rank == 1, step=o.step,
                                       step_seconds=0.6, ready=o.ready, phase=phase,
                                       heartbeat=job.frozen_at if sigstop and o.rank == 1 else o.heartbeat)
                       for o in obs]
            res = tick(st, obs, [], t, RANKS, HangConfig(timeout_s=60))
            if res.failure is not None:
                return t - job.frozen_at
        return None

    assert run("train") is not None, "without the phase this stall is a hang"
    assert run("sdc_check") is None and run("sdc") is None
    found = run("sdc_check", sigstop=True)
    assert found is not None and found <= 3.0
