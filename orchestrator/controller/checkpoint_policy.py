"""The checkpoint interval, chosen from the failures seen so far and what a save costs (Young/Daly).

Pure: the controller hands in counts and durations read from the catalog, and
gets back the interval for the next attempt with the sentence that explains it.

Checkpointing every τ seconds costs C per save and loses τ/2 of work per
failure on average; with failures every M seconds the sum is smallest near
Young's τ = √(2·C·M), which Daly refined to
τ = √(2CM)·(1 + ⅓·√(C/2M) + ⅑·(C/2M)) − C for C < 2M (τ = M beyond).
M is estimated from this job's unexpected interruptions over its run time
(exposure / failures) once it has seen one; before that, from the prior
(`prior_mtbf_s`) plus the time survived, so that a young job with no failure yet
does not checkpoint as if it never will. The prior is not pooled with observed
failures: worth a day of exposure, it outweighed a storm of failures for hours
(a 7-minute soak with a fault a minute estimated 3 h).
"""

from __future__ import annotations

import math
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class IntervalInput:
    failures: int
    """Unexpected interruptions of this job so far."""
    exposure_s: float
    """Seconds the job has been running (wall clock since it first started)."""
    save_cost_s: float
    """What one save costs the training loop (the blocked time of an async save)."""
    save_duration_s: float
    """How long one save takes end to end: saves cannot come closer than this."""
    step_s: float
    """Median seconds per step."""
    prior_mtbf_s: float
    min_steps: int = 1
    max_steps: int = 10_000
    what: str = "checkpoint"
    """What is saved (checkpoint, snapshot): the decision's sentence names it."""


@dataclass(frozen=True, slots=True)
class IntervalDecision:
    steps: int
    mtbf_s: float
    optimum_s: float
    reason: str


def daly_interval_s(cost_s: float, mtbf_s: float) -> float:
    """Daly's higher-order optimum checkpoint interval (seconds of work between saves)."""
    if cost_s <= 0:
        return 0.0
    if cost_s >= 2 * mtbf_s:
        return mtbf_s
    x = cost_s / (2 * mtbf_s)
    return math.sqrt(2 * cost_s * mtbf_s) * (1 + math.sqrt(x) / 3 + x / 9) - cost_s


def choose_interval(inp: IntervalInput) -> IntervalDecision:
    mtbf = inp.exposure_s / inp.failures if inp.failures else inp.exposure_s + inp.prior_mtbf_s
    # An async save still costs its blocked time; a tiny cost must not drive saves closer than they finish.
    cost = max(inp.save_cost_s, 1e-3)
    tau = daly_interval_s(cost, mtbf)
    step_s = max(inp.step_s, 1e-6)
    floor = max(inp.min_steps, math.ceil(inp.save_duration_s / step_s))
    steps = min(inp.max_steps, max(floor, round(tau / step_s)))
    return IntervalDecision(steps, mtbf, tau, (
        f"{inp.what} every {steps} steps: {inp.failures} failures in {inp.exposure_s / 3600:.2f} h "
        + ("" if inp.failures else f"(and a prior MTBF of {inp.prior_mtbf_s / 3600:g} h) ")
        + f"give an MTBF of {mtbf / 3600:.2f} h; a {inp.what} "
        f"blocks {cost:.3f} s and takes {inp.save_duration_s:.2f} s; Daly's optimum is {tau:.1f} s of "
        f"{step_s:.3f}-s steps, kept within [{floor}, {inp.max_steps}]"))
