"""The catalog writer: the controller callback that records everything in the catalog.

One transaction per event, never one per rank: placing, starting and ending an
attempt of 16,384 ranks is three transactions. Per-rank steps (for `status`)
are written at most every few seconds; the rest of a step's progress goes into
the job row.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from health.observations import Finding
from orchestrator.catalog.repository import Catalog
from orchestrator.controller.callbacks import ControllerCallback, InterruptionRecord, RankEnd, RankPlacement
from orchestrator.controller.monitor import Progress
from orchestrator.controller.state import ControllerState

RANK_STEPS_WRITE_INTERVAL_S = 2.0
RANK_STEPS_PER_SECOND = 2_000
"""Per-rank steps are only for `status`: big jobs write them less often (16,384 ranks: every ~8 s),
so that this write stays near a tenth of a core (bench/catalog_scale.py)."""


def utc(ts: float) -> datetime:
    return datetime.fromtimestamp(ts, UTC)


class CatalogWriter(ControllerCallback):
    def __init__(self, catalog: Catalog, job: str, clock: Any) -> None:
        self.catalog = catalog
        self.job = job
        self.clock = clock
        self._attempt_ids: dict[int, int] = {}
        self._ranks_written_at = 0.0
        self.open_interruption: int | None = None
        self._resumes: set[int] = set()
        """Attempts whose resume point is recorded."""
        """The unplanned interruption the job has not yet resumed from (its resumed_at is pending)."""

    def attempt_id(self, number: int) -> int:
        return self._attempt_ids[number]

    def state_changed(self, old: ControllerState, new: ControllerState, reason: str | None) -> None:
        now = utc(self.clock.time())
        fields: dict[str, Any] = {"state": new.value, "controller_heartbeat_at": now}
        if reason is not None:
            fields["reason"] = reason
        if new.terminal:
            fields["ended_at"] = now
        self.catalog.update_job(self.job, **fields)

    def heartbeat(self, now: float) -> None:
        self.catalog.update_job(self.job, controller_heartbeat_at=utc(now))

    def attempt_started(self, number: int, start_step: int, layout: dict[str, Any]) -> None:
        self._attempt_ids[number] = self.catalog.start_attempt(self.job, number, start_step, layout)
        self._ranks_written_at = 0.0

    def layout_changed(self, number: int, layout: dict[str, Any]) -> None:
        fields: dict[str, Any] = {"layout": dict(layout)}
        resumed = layout.get("resumed_from")
        if resumed and number not in self._resumes:
            self._resumes.add(number)
            fields["start_step"] = self._record_resume(int(resumed["step"]))
        self.catalog.update_attempt(self._attempt_ids[number], **fields)

    def _record_resume(self, step: int) -> int:
        """The step the attempt really resumed at, which a snapshot makes newer than the committed checkpoint
        the attempt and the interruption before it were recorded with: both are corrected."""
        if self.open_interruption is not None:
            i = self.catalog.get_interruption(self.open_interruption)
            # The ranks can get further than the controller saw (its own death): the snapshot proves they did.
            at_fault = max(step, i.step_at_fault if i.step_at_fault is not None else step)
            self.catalog.update_interruption(self.open_interruption, resume_step=step, step_at_fault=at_fault,
                                             steps_lost=at_fault - step)
        return step

    def ranks_placed(self, number: int, placements: list[RankPlacement]) -> None:
        self.catalog.record_placement(self._attempt_ids[number], [
            {"rank": p.rank, "host": p.host, "node_id": p.node_id, "address": p.address} for p in placements])

    def ranks_started(self, number: int, pids: dict[int, int | None], log_paths: dict[int, str]) -> None:
        aid = self._attempt_ids[number]
        self.catalog.record_ranks_started(aid, pids, log_paths, utc(self.clock.time()))
        self.catalog.update_attempt(aid, state="running")

    def progressed(self, number: int, progress: Progress, now: float) -> None:
        fields: dict[str, Any] = {"last_step": progress.step, "controller_heartbeat_at": utc(now)}
        if progress.loss is not None:
            fields["last_loss"] = progress.loss
        if progress.tokens_per_second is not None:
            fields["tokens_per_second"] = progress.tokens_per_second
        interval = max(RANK_STEPS_WRITE_INTERVAL_S, len(progress.rank_steps) / RANK_STEPS_PER_SECOND)
        write_ranks = now - self._ranks_written_at >= interval
        if write_ranks:
            self._ranks_written_at = now
        resumed = self.open_interruption if progress.first_step else None
        self.catalog.record_progress(self.job, fields, attempt_id=self._attempt_ids.get(number),
                                     rank_steps=progress.rank_steps if write_ranks else None,
                                     first_step_at=utc(now) if progress.first_step else None,
                                     resumed_interruption=resumed)
        if progress.first_step:
            self.open_interruption = None

    def checkpoint_committed(self, number: int, checkpoint: dict[str, Any]) -> None:
        self.catalog.record_checkpoint(self.job, checkpoint["step"], checkpoint.get("path", ""),
                                       checkpoint.get("attempt", number), checkpoint.get("blocked_s"),
                                       checkpoint.get("save_s"))

    def checkpoint_failed(self, number: int, failure: dict[str, Any]) -> None:
        v = failure.get("verdict") or {}
        self.catalog.record_checkpoint_failure(
            self.job, number, step=failure["step"], error=failure["error"], failures=failure["failures"],
            consecutive=failure["consecutive"], host=failure.get("host"), category=v.get("category", "unknown"),
            component=v.get("component", "unknown"), confidence=v.get("confidence", 0.0))

    def straggler_found(self, number: int, finding: Finding, step: int) -> None:
        self.catalog.record_interruption(
            job_name=self.job, attempt=number, planned=False, category="unknown", component="unknown",
            confidence=0.0, kind="straggler", explanation=finding.summary, ranks=list(finding.ranks),
            hosts=list(finding.hosts), evidence={"finding": finding.to_dict()}, fault_at=utc(finding.fault_at),
            detected_at=utc(finding.detected_at), step_at_fault=step, steps_lost=0,
        )

    def attempt_ended(self, number: int, state: str, reason: str, ends: list[RankEnd], now: float) -> None:
        aid = self._attempt_ids.get(number)
        if aid is None:  # an attempt an earlier controller started
            row = self.catalog.get_attempt(self.job, number)
            if row is None:
                return
            aid = self._attempt_ids[number] = row.id
        close = "lost" if state == "lost" else "stopped"
        self.catalog.end_attempt(aid, state=state, reason=reason, ended_at=utc(now), close_state=close, ends={
            e.rank: {"exit_code": e.exit_code, "signal": e.signal, "ended_at": utc(e.ended_at)} for e in ends})

    def interrupted(self, record: InterruptionRecord) -> None:
        def t(x: float | None) -> datetime | None:
            return None if x is None else utc(x)

        iid = self.catalog.record_interruption(
            job_name=record.job, attempt=record.attempt, planned=record.planned, category=record.category,
            component=record.component, confidence=record.confidence, kind=record.kind,
            explanation=record.explanation, ranks=list(record.ranks), hosts=list(record.hosts),
            gpus=list(record.gpus), evidence={**record.evidence, "decision": record.decision},
            evidence_text=record.evidence_text, fault_at=t(record.fault_at), detected_at=t(record.detected_at),
            stopped_at=t(record.stopped_at), step_at_fault=record.step_at_fault, resume_step=record.resume_step,
            steps_lost=record.steps_lost,
            host_states=[(a.host, a.state, a.reason) for a in record.host_actions],
        )
        if record.resumed_at is not None:
            self.catalog.update_interruption(iid, resumed_at=utc(record.resumed_at))
        elif not record.planned:
            self.open_interruption = iid
