"""The monitor tick: one round of observations and findings in, what the controller must do out.

Pure: no Ray, no clock reads, no catalog. The controller calls `tick` once per
poll with the node agents' reports; the simulation and the tests call it with
observations they make up. The state it carries between ticks (progress, step
times, checkpoints seen, stragglers flagged) is small and plain.
"""

from __future__ import annotations

import statistics
from collections import deque
from dataclasses import dataclass, field
from typing import Any

from health.detectors import HangConfig, detect_hang, detect_stragglers, first_cause, hang_limit
from health.observations import Finding, RankObservation

STEP_TIME_WINDOW = 20
INTERVAL_WINDOW = 256
"""Plain step intervals the hang limit learns from: several checkpoint intervals' worth of GC pauses and jitter."""
SAVE_WINDOW = 16
STOPPED_POLLS = 2
"""Polls in a row that must see a rank's process stopped before that alone is a hang."""


@dataclass(slots=True)
class StoppedSighting:
    """A rank seen stopped in consecutive polls: how many, the job's step and its peers' heartbeats at the first."""

    step: int
    peer_beats: dict[int, float | None]
    polls: int = 1


@dataclass(slots=True)
class MonitorState:
    """What one attempt's monitoring remembers between ticks."""

    start_step: int
    last_progress_at: float
    layout: dict[str, Any] = field(default_factory=dict)
    """The attempt's dp/tp/pp/cp: hang attribution compares ranks only within their process groups."""
    total_steps: int | None = None
    """Once every rank has done this many steps, the job is saving and shutting down: no step comes."""
    last_step: int = -1
    step_times: deque[float] = field(default_factory=lambda: deque(maxlen=STEP_TIME_WINDOW))
    checkpoint_step: int = 0
    first_step_seen: bool = False
    flagged: set[int] = field(default_factory=set)
    save_failures: int = 0
    """Failed checkpoint saves rank 0 has reported in this attempt."""
    intervals: deque[float] = field(default_factory=lambda: deque(maxlen=INTERVAL_WINDOW))
    """Wall seconds from one step's start to the next's, from rank 0's readiness ring, save steps excluded."""
    save_intervals: deque[float] = field(default_factory=lambda: deque(maxlen=SAVE_WINDOW))
    """The same for steps that start a save and the steps after them (which wait for its staging)."""
    saving_steps: deque[int] = field(default_factory=lambda: deque(maxlen=SAVE_WINDOW))
    ready_seen: tuple[int, float] | None = None
    """The newest (step, ready time) taken from the readiness ring."""
    stopped_seen: dict[int, StoppedSighting] = field(default_factory=dict)
    """Ranks whose process the latest polls saw stopped."""

    def __post_init__(self) -> None:
        if self.last_step < 0:
            self.last_step = self.start_step


@dataclass(frozen=True, slots=True)
class Progress:
    step: int
    """The step every rank has completed."""
    loss: float | None
    tokens_per_second: float | None
    rank_steps: dict[int, int]
    first_step: bool
    """The attempt's first completed step: the interruption before it is over."""
    rank_step_seconds: dict[int, float] = field(default_factory=dict)
    """Each rank's newest step time (for per-rank and per-host step-time metrics)."""


@dataclass(frozen=True, slots=True)
class TickResult:
    waiting: bool = False
    """Not every rank has reported yet."""
    progress: Progress | None = None
    checkpoint: dict[str, Any] | None = None
    """A checkpoint newly committed: step, path, blocked and save seconds."""
    save_failure: dict[str, Any] | None = None
    """A checkpoint save newly failed (training goes on): step, error, failures, consecutive failures, host."""
    stragglers: tuple[Finding, ...] = ()
    """Ranks newly found to straggle (recorded; the job goes on)."""
    failure: Finding | None = None
    """The finding that ends the attempt."""
    finished: bool = False
    """Every rank exited 0."""
    completed: bool = False
    """... and every rank reached the end of training (else they stopped early)."""
    exited: tuple[RankObservation, ...] = ()
    """Ranks seen to have exited, with their codes (when the attempt ends)."""


def tick(state: MonitorState, obs: list[RankObservation], findings: list[Finding], now: float,
         world_size: int, hang: HangConfig) -> TickResult:
    """Advance `state` by one round of reports."""
    if len(obs) < world_size:
        return TickResult(waiting=True)
    obs = sorted(obs, key=lambda o: o.rank)
    progress = _progress(state, obs, now)
    _learn_intervals(state, obs)
    checkpoint = _checkpoint(state, obs)
    failed_save = _save_failure(state, obs)
    exited = tuple(o for o in obs if o.returncode is not None)
    crash = first_cause(findings, now)
    if crash is not None:
        return TickResult(progress=progress, checkpoint=checkpoint, save_failure=failed_save, failure=crash,
                          exited=exited)
    if all(o.returncode == 0 for o in obs):
        return TickResult(progress=progress, checkpoint=checkpoint, save_failure=failed_save, finished=True,
                          exited=exited, completed=all(o.phase == "done" for o in obs))
    # Saving, past the last step, or exiting (a loaded host can take seconds to exit): the job's full timeout.
    finishing = state.total_steps is not None and min(o.step for o in obs) >= state.total_steps
    # After an SDC verdict (phase `sdc`) the named replica exits and the others wait to be stopped: that exit,
    # not the wait, is the finding.
    checkpointing = (any(o.phase in ("done", "stopped", "failed", "sdc") for o in obs)
                     or not state.first_step_seen or finishing)
    limit = hang_limit(list(state.intervals) or list(state.step_times), hang, checkpointing=checkpointing,
                       saving=_saving(state, obs), save_step_seconds=list(state.save_intervals),
                       stopped=_stopped(state, obs), sdc_check=any(o.phase == "sdc_check" for o in obs))
    hung = detect_hang(obs, state.last_progress_at, now, limit, layout=state.layout)
    if hung is not None:
        return TickResult(progress=progress, checkpoint=checkpoint, save_failure=failed_save, failure=hung,
                          exited=exited)
    median = statistics.median(state.step_times) if state.step_times else None
    new = []
    for f in detect_stragglers(obs, median, now):
        if f.ranks[0] not in state.flagged:
            state.flagged.add(f.ranks[0])
            new.append(f)
    return TickResult(progress=progress, checkpoint=checkpoint, save_failure=failed_save, stragglers=tuple(new))


def _progress(state: MonitorState, obs: list[RankObservation], now: float) -> Progress | None:
    resumed = max((int(o.resumed.get("step") or 0) for o in obs), default=0)
    if not state.first_step_seen and resumed > state.start_step:
        # The ranks loaded a snapshot newer than the checkpoint the attempt was started from: their beacons'
        # step is where they resumed, not a step done. The interruption lasts until a step past it.
        state.start_step = state.last_step = resumed
    step = min(o.step for o in obs)
    if step <= state.last_step:
        return None
    state.last_step, state.last_progress_at = step, now
    if obs[0].step_seconds:
        state.step_times.append(obs[0].step_seconds)
    first = not state.first_step_seen and step > state.start_step
    state.first_step_seen = state.first_step_seen or first
    o0 = obs[0]
    return Progress(step=step, loss=None if o0.loss is None else float(o0.loss),
                    tokens_per_second=None if o0.tokens_per_second is None else float(o0.tokens_per_second),
                    rank_steps={o.rank: o.step for o in obs}, first_step=first,
                    rank_step_seconds={o.rank: o.step_seconds for o in obs if o.step_seconds is not None})


def _learn_intervals(state: MonitorState, obs: list[RankObservation]) -> None:
    """Take the step intervals rank 0's readiness ring holds that are new, sorted into plain and save steps.

    The ring has every step's start, so no step is missed between polls (save
    steps included); the attempt's first step (warm-up) teaches nothing.
    """
    for o in obs:
        if o.saving_step is not None and o.saving_step not in state.saving_steps:
            state.saving_steps.append(o.saving_step)
    for step, t in obs[0].ready:
        prev = state.ready_seen
        if prev is not None and step <= prev[0]:
            continue
        state.ready_seen = (step, t)
        if prev is None or step != prev[0] + 1 or prev[0] <= state.start_step + 1:
            continue
        saves = prev[0] in state.saving_steps or prev[0] - 1 in state.saving_steps
        (state.save_intervals if saves else state.intervals).append(t - prev[1])


def _stopped(state: MonitorState, obs: list[RankObservation]) -> bool:
    """A live rank's process was seen stopped by two polls in a row, no step completed since the first, and
    every other live rank has beaconed since then.

    The kernel's word needs no learned limit: a stopped process takes part in no
    collective, so every step waits for it. Two sightings rule out a blip (a
    debugger's attach, job control undone at once); the peers' newer beacons say
    where they wait for it (heartbeat values are only compared with themselves,
    never across hosts' clocks).
    """
    seen = state.stopped_seen
    live = [o for o in obs if o.worker_alive and o.returncode is None]
    stopped = {o.rank for o in live if o.stopped}
    for r in [r for r in seen if r not in stopped]:
        del seen[r]
    for r in stopped:
        if r in seen:
            seen[r].polls += 1
        else:
            seen[r] = StoppedSighting(state.last_step, {o.rank: o.heartbeat for o in live if o.rank != r})
    beats = {o.rank: o.heartbeat for o in live}
    return any(s.polls >= STOPPED_POLLS and s.step == state.last_step
               and all(beats.get(p) != b for p, b in s.peer_beats.items() if p not in stopped)
               for s in seen.values())


def _saving(state: MonitorState, obs: list[RankObservation]) -> bool:
    """The step in flight starts a save or waits for one (a save's step and the one after it)."""
    newest = max((o.saving_step for o in obs if o.saving_step is not None), default=None)
    return (any(o.phase == "checkpoint" for o in obs)
            or (newest is not None and state.last_step in (newest - 1, newest)))


def _checkpoint(state: MonitorState, obs: list[RankObservation]) -> dict[str, Any] | None:
    c = obs[0].checkpoint
    step = int(c.get("checkpoint_step", 0) or 0)
    if step <= state.checkpoint_step:
        return None
    state.checkpoint_step = step
    return {"step": step, "path": c.get("checkpoint_path", ""), "blocked_s": c.get("checkpoint_blocked_s"),
            "save_s": c.get("checkpoint_seconds")}


def _save_failure(state: MonitorState, obs: list[RankObservation]) -> dict[str, Any] | None:
    """Rank 0 counts its failed saves; a higher count than last seen is a new failure."""
    c = obs[0].checkpoint
    failures = int(c.get("checkpoint_failures", 0) or 0)
    if failures <= state.save_failures:
        return None
    state.save_failures = failures
    return {"step": int(c.get("checkpoint_failed_step", obs[0].step) or 0),
            "error": str(c.get("checkpoint_error") or "unknown error"), "failures": failures,
            "consecutive": int(c.get("checkpoint_consecutive_failures", 1) or 1), "host": obs[0].host}
