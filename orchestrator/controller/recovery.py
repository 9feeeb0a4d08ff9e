"""What a (re)started controller reads back from the catalog to carry on.

The catalog holds everything the decisions depend on: the outcomes of this
submission's attempts (the retry window, crash loops, deterministic failures),
the data-parallel degree after a shrink, each host's hardware record (lemons)
and the attempts a dead controller left open. Rebuilt from it, a controller
decides as one that never died would.
"""

from __future__ import annotations

import statistics
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from orchestrator.catalog.db import as_utc
from orchestrator.catalog.models import Attempt, Job
from orchestrator.catalog.repository import Catalog
from orchestrator.controller.checkpoint_policy import IntervalDecision, IntervalInput, choose_interval
from orchestrator.controller.failure_policy import AttemptOutcome, JobHistory, OutcomeKind
from orchestrator.hosts import lemon_hosts
from orchestrator.spec import JobSpec

_KINDS = {k.value: k for k in OutcomeKind} | {"operator_stop": OutcomeKind.STOPPED}
IN_PLACE_KINDS = frozenset({"straggler", "loss_rollback"})
"""Interruptions recorded while the attempt went on: they say nothing of how it ended."""


def _ts(dt: datetime | None) -> float:
    d = as_utc(dt)
    return d.timestamp() if d is not None else 0.0


def submission_attempts(job: Job) -> list[Attempt]:
    """The attempts of the job's current submission (a resubmission starts a fresh history)."""
    since = as_utc(job.submitted_at)
    return [a for a in job.attempts if since is None or (as_utc(a.started_at) or since) >= since]


def history_from_catalog(catalog: Catalog, job: Job) -> JobHistory:
    by_attempt: dict[int, Any] = {}
    for i in catalog.interruptions(job.name):
        if i.kind not in IN_PLACE_KINDS:
            by_attempt.setdefault(i.attempt, i)
    history = JobHistory()
    for a in submission_attempts(job):
        if a.state in ("starting", "running"):
            continue  # still open: `open_attempt` turns it into an outcome
        i = by_attempt.get(a.number)
        kind = _KINDS.get(i.kind, OutcomeKind.CRASH) if i is not None else (
            OutcomeKind.SUCCEEDED if a.state == "succeeded" else OutcomeKind.STOPPED if a.state == "stopped"
            else OutcomeKind.CRASH)
        history.outcomes.append(AttemptOutcome(
            kind, committed_step=(i.resume_step if i is not None and i.resume_step is not None else a.start_step),
            start_step=a.start_step, culprit_ranks=tuple(i.ranks) if i else (),
            culprit_hosts=tuple(i.hosts) if i else (), detail=(i.explanation or "") if i else (a.reason or ""),
            at_s=_ts(a.ended_at), step_at_fault=(i.step_at_fault or 0) if i else (a.end_step or 0),
            signature=((i.evidence or {}).get("signature") or "") if i else "",
            category=(i.category or "") if i else ""))
    return history


def current_dp(job: Job, default: int) -> int:
    """The data-parallel degree of the submission's newest attempt (smaller after a shrink)."""
    for a in reversed(submission_attempts(job)):
        if a.layout and a.layout.get("dp"):
            return int(a.layout["dp"])
    return default


def lemon_counts(catalog: Catalog, now_s: float) -> dict[str, int]:
    """Each host's unplanned hardware interruptions within the lemon window."""
    return dict(lemon_hosts(catalog, now=datetime.fromtimestamp(now_s, UTC)).counts)


@dataclass(frozen=True, slots=True)
class OpenAttempt:
    """An attempt a dead controller left running, as the outcome the new controller must handle."""

    number: int
    start_step: int
    layout: dict[str, Any]
    outcome: AttemptOutcome


def open_attempts(job: Job, alive_node_ids: set[str], committed_step: int, now_s: float) -> list[OpenAttempt]:
    """Attempts still marked starting or running: their controller died, and maybe their nodes."""
    out = []
    for a in job.attempts:
        if a.state not in ("starting", "running"):
            continue
        lost = sorted((r for r in a.ranks if r.node_id and r.node_id not in alive_node_ids), key=lambda r: r.rank)
        hosts = tuple(dict.fromkeys(r.host for r in lost if r.host))
        if hosts:
            kind, detail = OutcomeKind.NODE_LOST, f"nodes {', '.join(hosts)} left the cluster while the " \
                                                  f"controller was down"
        else:
            kind, detail = OutcomeKind.CONTROLLER_LOST, "the job's controller died; its ranks died with it"
        fault = _ts(job.controller_heartbeat_at) or now_s
        out.append(OpenAttempt(a.number, a.start_step, dict(a.layout or {}), AttemptOutcome(
            kind, committed_step, a.start_step, tuple(r.rank for r in lost), hosts, detail,
            finding={"fault_at": fault, "detected_at": now_s}, at_s=now_s, step_at_fault=job.last_step)))
    return out


def exposure_s(catalog: Catalog, spec: JobSpec, now_s: float) -> float:
    """Seconds the job has run since it first started (what its failure rate is measured over)."""
    started = as_utc(catalog.require_job(spec.name).started_at)
    return max(0.0, now_s - started.timestamp()) if started else 0.0


def snapshot_interval(spec: JobSpec, catalog: Catalog, failures: int, cost: tuple[float, float] | None,
                      step_s: float | None, now_s: float) -> IntervalDecision | None:
    """The next attempt's in-memory snapshot interval when the job's checkpoint interval is `auto`: Young/Daly
    from every failure so far (a snapshot can save the work of any of them) and `cost`, what a snapshot measured
    to cost the training loop and how long its write takes (never closer than that); at most
    `checkpoint.snapshot_interval_steps`, the job file's, used until a step and a snapshot have been measured."""
    c = spec.checkpoint
    if not c.auto or not c.snapshot_interval_steps:
        return None
    if cost is None or step_s is None:
        return IntervalDecision(c.snapshot_interval_steps, 0.0, 0.0,
                                f"snapshot every {c.snapshot_interval_steps} steps (checkpoint.snapshot_interval_steps)"
                                " until a step and a snapshot have been measured")
    return choose_interval(IntervalInput(
        failures=failures, exposure_s=exposure_s(catalog, spec, now_s), save_cost_s=cost[0],
        save_duration_s=cost[1], step_s=step_s, prior_mtbf_s=c.auto_prior_mtbf_s, min_steps=1,
        max_steps=c.snapshot_interval_steps, what="snapshot"))


def snapshot_covered(attempts: list[Attempt], committed_step: int) -> int:
    """Failed attempts whose work the in-memory snapshots saved: the next attempt resumed from a snapshot or, for
    the last one (not restarted yet), every rank held a snapshot newer than the newest committed checkpoint."""
    ordered = sorted(attempts, key=lambda a: a.number)
    covered = 0
    for i, a in enumerate(ordered):
        if a.state not in ("failed", "lost"):
            continue
        if i + 1 < len(ordered):
            covered += ((ordered[i + 1].layout or {}).get("resumed_from") or {}).get("kind") == "snapshot"
        else:
            covered += int((a.layout or {}).get("snapshot_step") or 0) > committed_step
    return covered


def checkpoint_interval(spec: JobSpec, catalog: Catalog, failures: int, step_s: float | None,
                        now_s: float) -> IntervalDecision | None:
    """The next attempt's checkpoint interval when the job asks for `auto`, from what the catalog measured."""
    c = spec.checkpoint
    if not c.auto:
        return None
    saves = catalog.checkpoints(spec.name)
    blocked = [s.blocked_seconds for s in saves if s.blocked_seconds is not None]
    durations = [s.save_seconds for s in saves if s.save_seconds is not None]
    if step_s is None or not blocked:
        return IntervalDecision(c.auto_initial_steps, 0.0, 0.0, f"checkpoint every {c.auto_initial_steps} steps "
                                "(checkpoint.auto_initial_steps) until a step and a save have been measured")
    return choose_interval(IntervalInput(
        failures=failures, exposure_s=exposure_s(catalog, spec, now_s),
        save_cost_s=statistics.median(blocked), save_duration_s=statistics.median(durations) if durations else 0.0,
        step_s=step_s, prior_mtbf_s=c.auto_prior_mtbf_s, min_steps=c.auto_min_steps, max_steps=c.auto_max_steps))
