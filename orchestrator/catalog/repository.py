"""Catalog access: sessions, inserts and queries. No policy decisions here."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import func, insert, inspect, select, update
from sqlalchemy.exc import OperationalError, SQLAlchemyError
from sqlalchemy.orm import Session, noload, selectinload, sessionmaker

from orchestrator.catalog.db import CatalogError, _first_line, check_schema, make_engine, redact, upgrade_schema
from orchestrator.catalog.models import (
    Attempt,
    CheckpointRecord,
    Host,
    HostEvent,
    Interruption,
    Job,
    RankRecord,
    utcnow,
)

TERMINAL_JOB_STATES = frozenset({"succeeded", "failed", "stopped"})
HOST_STATES = ("healthy", "suspect", "cordoned", "repaired")
_OPEN_RANK_STATES = ("starting", "placed", "running")


@dataclass(frozen=True, slots=True)
class JobStatus:
    job: Job
    attempts: list[Attempt]
    """Every attempt, oldest first, without its ranks."""
    current_ranks: list[RankRecord]
    """The ranks of the job's current attempt only."""


class NotFoundError(LookupError):
    """A job, host or incident the caller named does not exist."""


def _check_fields(model: type, fields: dict[str, Any]) -> None:
    """A name that is not a column of the model is an error, not a new attribute set silently."""
    columns = inspect(model).column_attrs.keys()
    unknown = sorted(set(fields) - set(columns))
    if unknown:
        raise ValueError(f"{model.__name__} has no field {unknown[0]!r} (fields: {', '.join(sorted(columns))})")


def _set_fields(row: Any, fields: dict[str, Any]) -> None:
    _check_fields(type(row), fields)
    for k, v in fields.items():
        setattr(row, k, v)


class Catalog:
    """The catalog of one deployment, on SQLite or PostgreSQL."""

    def __init__(self, url: str, *, migrate: bool = True) -> None:
        """`migrate`: bring the schema up to date (under a lock); otherwise refuse a schema that is
        not this version's with SchemaBehindError and change nothing (read-only clients)."""
        self.url = url
        self.engine = make_engine(url)
        self.upgraded = False
        """True when opening this catalog changed its schema."""
        try:
            if migrate:
                self.upgraded = upgrade_schema(self.engine)
            else:
                check_schema(self.engine)
        except CatalogError:
            self.engine.dispose()
            raise
        self._sessions = sessionmaker(self.engine, expire_on_commit=False)

    @contextmanager
    def session(self) -> Iterator[Session]:
        try:
            with self._sessions.begin() as s:
                yield s
        except OperationalError as e:
            raise CatalogError(f"database {redact(self.url)}: {_first_line(e)}") from None
        except SQLAlchemyError as e:
            if isinstance(e, NotFoundError):
                raise
            raise CatalogError(f"database {redact(self.url)}: {_first_line(e)}") from None

    def close(self) -> None:
        self.engine.dispose()

    # ---- jobs ------------------------------------------------------------------
    def get_job(self, name: str) -> Job | None:
        with self.session() as s:
            return s.get(Job, name, options=[selectinload(Job.attempts).selectinload(Attempt.ranks)])

    def require_job(self, name: str) -> Job:
        job = self.get_job(name)
        if job is None:
            raise NotFoundError(f"no job named {name!r} in the catalog")
        return job

    def job_row(self, name: str) -> Job | None:
        """The job's own row, none of its attempts or ranks (cheap enough to poll)."""
        with self.session() as s:
            return s.get(Job, name, options=[noload(Job.attempts)])

    def job_status(self, name: str) -> JobStatus | None:
        """What `status` shows: the job, its attempts without their ranks, and the current attempt's ranks.

        Three small queries whatever the job's history: ranks of earlier attempts are never read.
        """
        with self.session() as s:
            job = s.get(Job, name, options=[noload(Job.attempts)])
            if job is None:
                return None
            attempts = s.scalars(select(Attempt).options(noload(Attempt.ranks)).where(Attempt.job_name == name)
                                 .order_by(Attempt.number)).all()
            ranks = s.scalars(select(RankRecord).join(Attempt, RankRecord.attempt_id == Attempt.id)
                              .where(Attempt.job_name == name, Attempt.number == job.current_attempt)
                              .order_by(RankRecord.rank)).all()
            return JobStatus(job, list(attempts), list(ranks))

    def list_jobs(self) -> Sequence[Job]:
        with self.session() as s:
            return s.scalars(select(Job).order_by(Job.submitted_at.desc())).all()

    def create_job(self, name: str, spec: dict[str, Any], world_size: int, steps_total: int,
                   run_dir: str, ray_address: str | None, ray_embedded: bool = False) -> Job:
        """Create the job row, or reset a finished one for a new submission."""
        with self.session() as s:
            job = s.get(Job, name)
            if job is None:
                job = Job(name=name, state="pending", spec=spec, world_size=world_size,
                          steps_total=steps_total, run_dir=run_dir, ray_address=ray_address,
                          ray_embedded=ray_embedded)
                s.add(job)
            else:
                job.state, job.spec, job.world_size = "pending", spec, world_size
                job.steps_total, job.run_dir, job.ray_address = steps_total, run_dir, ray_address
                job.ray_embedded = ray_embedded
                job.reason, job.ended_at = None, None
                job.submitted_at = utcnow()  # a new submission: the retry budget starts afresh
            return job

    def delete_job(self, name: str) -> None:
        with self.session() as s:
            job = s.get(Job, name)
            if job is not None:
                s.delete(job)

    def update_job(self, name: str, **fields: Any) -> None:
        with self.session() as s:
            job = s.get(Job, name)
            if job is None:
                raise NotFoundError(f"no job named {name!r} in the catalog")
            _set_fields(job, fields)

    # ---- attempts and ranks ------------------------------------------------------
    def start_attempt(self, job_name: str, number: int, start_step: int, layout: dict[str, Any]) -> int:
        with self.session() as s:
            a = Attempt(job_name=job_name, number=number, state="starting", start_step=start_step,
                        layout=layout)
            s.add(a)
            job = s.get(Job, job_name)
            assert job is not None
            job.current_attempt = number
            if job.started_at is None:
                job.started_at = utcnow()
            s.flush()
            return a.id

    def get_attempt(self, job_name: str, number: int) -> Attempt | None:
        with self.session() as s:
            return s.scalars(select(Attempt).options(selectinload(Attempt.ranks))
                             .where(Attempt.job_name == job_name, Attempt.number == number)).first()

    def update_attempt(self, attempt_id: int, **fields: Any) -> None:
        with self.session() as s:
            a = s.get(Attempt, attempt_id)
            assert a is not None
            _set_fields(a, fields)

    def upsert_rank(self, attempt_id: int, rank: int, **fields: Any) -> None:
        _check_fields(RankRecord, fields)
        with self.session() as s:
            r = s.scalars(select(RankRecord).where(RankRecord.attempt_id == attempt_id,
                                                   RankRecord.rank == rank)).first()
            if r is None:
                r = RankRecord(attempt_id=attempt_id, rank=rank, state=fields.pop("state", "starting"))
                s.add(r)
            _set_fields(r, fields)

    def record_placement(self, attempt_id: int, placements: list[dict[str, Any]]) -> None:
        """Every rank's host, and every host seen, in one transaction.

        Each placement holds rank, host, node_id and address.
        """
        with self.session() as s:
            hosts = {p["host"]: p for p in placements}
            known = {h.name: h for h in s.scalars(select(Host).where(Host.name.in_(list(hosts))))}
            for name, p in hosts.items():
                h = known.get(name)
                if h is None:
                    s.add(Host(name=name, node_id=p.get("node_id"), address=p.get("address"), state="healthy"))
                elif (h.node_id, h.address) != (p.get("node_id"), p.get("address")):
                    h.node_id, h.address = p.get("node_id"), p.get("address")
            rows = self._rank_rows(s, attempt_id)
            new = []
            for p in placements:
                r = rows.get(p["rank"])
                if r is None:
                    new.append({"attempt_id": attempt_id, "rank": p["rank"], "host": p["host"],
                                "node_id": p.get("node_id"), "state": "placed", "step": 0})
                else:
                    r.host, r.node_id, r.state = p["host"], p.get("node_id"), "placed"
            if new:
                s.execute(insert(RankRecord), new)

    def record_ranks_started(self, attempt_id: int, pids: dict[int, int | None], log_paths: dict[int, str],
                             started_at: datetime) -> None:
        with self.session() as s:
            ids = self._rank_ids(s, attempt_id)
            rows = [{"id": ids[r], "pid": pid, "state": "running", "started_at": started_at,
                     "log_path": log_paths.get(r)} for r, pid in pids.items() if r in ids]
            if rows:
                s.execute(update(RankRecord), rows)

    def end_attempt(self, attempt_id: int, *, state: str, reason: str | None, ended_at: datetime,
                    ends: dict[int, dict[str, Any]], close_state: str) -> None:
        """Close an attempt and all its ranks in one transaction.

        `ends` maps a rank to its exit_code, signal and ended_at where they were seen;
        the other ranks still open are closed in `close_state`.
        """
        with self.session() as s:
            a = s.get(Attempt, attempt_id)
            if a is None:
                raise NotFoundError(f"no attempt with id {attempt_id}")
            job = s.get(Job, a.job_name)
            a.state, a.reason, a.ended_at = state, reason, ended_at
            a.end_step = job.last_step if job is not None else None
            ids = self._rank_ids(s, attempt_id)
            rows = []
            for rank, end in ends.items():
                if rank not in ids:
                    continue
                code = end.get("exit_code")
                rows.append({"id": ids[rank], "exit_code": code, "signal": end.get("signal"),
                             "ended_at": end.get("ended_at") or ended_at,
                             "state": "exited" if code == 0 else "failed" if code is not None else close_state})
            if rows:
                s.execute(update(RankRecord), rows)
            s.execute(update(RankRecord)
                      .where(RankRecord.attempt_id == attempt_id, RankRecord.state.in_(_OPEN_RANK_STATES))
                      .values(state=close_state, ended_at=func.coalesce(RankRecord.ended_at, ended_at)))

    def record_progress(self, job_name: str, job_fields: dict[str, Any], *, attempt_id: int | None = None,
                        rank_steps: dict[int, int] | None = None, first_step_at: datetime | None = None,
                        resumed_interruption: int | None = None) -> None:
        """A step's worth of progress in one transaction: the job row, and where given the ranks'
        steps, the attempt's first step and the end of the interruption it resumed from."""
        with self.session() as s:
            job = s.get(Job, job_name)
            if job is None:
                raise NotFoundError(f"no job named {job_name!r} in the catalog")
            _set_fields(job, job_fields)
            if attempt_id is not None and first_step_at is not None:
                a = s.get(Attempt, attempt_id)
                if a is not None:
                    a.first_step_at = first_step_at
            if resumed_interruption is not None:
                i = s.get(Interruption, resumed_interruption)
                if i is not None and i.resumed_at is None:
                    i.resumed_at = first_step_at
            if attempt_id is not None and rank_steps:
                ids = self._rank_ids(s, attempt_id)
                rows = [{"id": ids[r], "step": st} for r, st in rank_steps.items() if r in ids]
                if rows:
                    s.execute(update(RankRecord), rows)

    @staticmethod
    def _rank_rows(s: Session, attempt_id: int) -> dict[int, RankRecord]:
        return {r.rank: r for r in s.scalars(select(RankRecord).where(RankRecord.attempt_id == attempt_id))}

    @staticmethod
    def _rank_ids(s: Session, attempt_id: int) -> dict[int, int]:
        rows = s.execute(select(RankRecord.rank, RankRecord.id).where(RankRecord.attempt_id == attempt_id))
        return {rank: rid for rank, rid in rows}

    def set_rank_steps(self, attempt_id: int, steps: dict[int, int]) -> None:
        """Record the current step of many ranks in one transaction."""
        with self.session() as s:
            for r in s.scalars(select(RankRecord).where(RankRecord.attempt_id == attempt_id)):
                if r.rank in steps:
                    r.step = steps[r.rank]

    def close_open_ranks(self, attempt_id: int, state: str) -> None:
        """Mark ranks that were still starting or running as ended in `state`."""
        with self.session() as s:
            for r in s.scalars(select(RankRecord).where(RankRecord.attempt_id == attempt_id,
                                                        RankRecord.state.in_(("starting", "placed", "running")))):
                r.state = state
                r.ended_at = r.ended_at or utcnow()

    def live_ranks(self, job_name: str) -> Sequence[RankRecord]:
        """Ranks of the job's attempts that were never seen to end (for orphan cleanup)."""
        with self.session() as s:
            return s.scalars(select(RankRecord).join(Attempt)
                             .where(Attempt.job_name == job_name, RankRecord.ended_at.is_(None))).all()

    # ---- checkpoints ------------------------------------------------------------
    def record_checkpoint(self, job_name: str, step: int, path: str, attempt: int,
                          blocked_seconds: float | None, save_seconds: float | None) -> None:
        with self.session() as s:
            exists = s.scalars(select(CheckpointRecord).where(CheckpointRecord.job_name == job_name,
                                                              CheckpointRecord.step == step)).first()
            if exists is None:
                s.add(CheckpointRecord(job_name=job_name, step=step, path=path, attempt=attempt,
                                       blocked_seconds=blocked_seconds, save_seconds=save_seconds))

    def record_checkpoint_failure(self, job_name: str, attempt: int, *, step: int, error: str, failures: int,
                                  consecutive: int, host: str | None, category: str = "unknown",
                                  component: str = "unknown", confidence: float = 0.0) -> int:
        """A checkpoint save that failed while training went on: a non-interrupting incident, no steps lost."""
        now = utcnow()
        explanation = (f"checkpoint save of step {step} failed ({consecutive} consecutive, {failures} this attempt); "
                       f"training went on: {error}")
        return self.record_interruption(
            job_name=job_name, attempt=attempt, planned=False, category=category, component=component,
            confidence=confidence, kind="checkpoint_failed", explanation=explanation, ranks=[0],
            hosts=[host] if host else [], evidence={"step": step, "error": error, "failures": failures,
                                                    "consecutive_failures": consecutive},
            evidence_text=error, fault_at=now, detected_at=now, step_at_fault=step, steps_lost=0)

    def checkpoints(self, job_name: str) -> Sequence[CheckpointRecord]:
        with self.session() as s:
            return s.scalars(select(CheckpointRecord).where(CheckpointRecord.job_name == job_name)
                             .order_by(CheckpointRecord.step)).all()

    # ---- interruptions ----------------------------------------------------------
    def record_interruption(self, *, host_states: list[tuple[str, str, str]] | None = None,
                            actor: str = "controller", **fields: Any) -> int:
        """Record an interruption and the host states it caused ((host, state, reason) each), in one transaction."""
        with self.session() as s:
            row = Interruption(**fields)
            s.add(row)
            s.flush()
            for host, state, reason in host_states or []:
                self._set_host_state(s, host, state, reason=reason, actor=actor, interruption_id=row.id,
                                     create=True)
            return row.id

    def update_interruption(self, interruption_id: int, **fields: Any) -> None:
        with self.session() as s:
            row = s.get(Interruption, interruption_id)
            if row is None:
                raise NotFoundError(f"no incident with id {interruption_id}")
            _set_fields(row, fields)

    def get_interruption(self, interruption_id: int) -> Interruption:
        with self.session() as s:
            row = s.get(Interruption, interruption_id)
            if row is None:
                raise NotFoundError(f"no incident with id {interruption_id}")
            return row

    def interruptions(self, job_name: str | None = None, *, since: datetime | None = None,
                      category: str | None = None, open_only: bool = False) -> Sequence[Interruption]:
        q = select(Interruption).order_by(Interruption.id)
        if job_name is not None:
            q = q.where(Interruption.job_name == job_name)
        if since is not None:
            q = q.where(Interruption.detected_at >= since)
        if category is not None:
            q = q.where(Interruption.category == category)
        if open_only:
            q = q.where(Interruption.status != "resolved")
        with self.session() as s:
            return s.scalars(q).all()

    # ---- hosts --------------------------------------------------------------------
    def see_host(self, name: str, node_id: str | None, address: str | None) -> None:
        with self.session() as s:
            h = s.get(Host, name)
            if h is None:
                s.add(Host(name=name, node_id=node_id, address=address, state="healthy"))
            elif (h.node_id, h.address) != (node_id, address):
                h.node_id, h.address = node_id, address

    def get_host(self, name: str) -> Host:
        with self.session() as s:
            h = s.get(Host, name, options=[selectinload(Host.events)])
            if h is None:
                raise NotFoundError(f"no host named {name!r} in the catalog")
            return h

    def hosts(self) -> Sequence[Host]:
        with self.session() as s:
            return s.scalars(select(Host).order_by(Host.name)).all()

    def set_host_state(self, name: str, state: str, *, reason: str | None, actor: str | None,
                       interruption_id: int | None = None, create: bool = False) -> None:
        with self.session() as s:
            self._set_host_state(s, name, state, reason=reason, actor=actor, interruption_id=interruption_id,
                                 create=create)

    @staticmethod
    def _set_host_state(s: Session, name: str, state: str, *, reason: str | None, actor: str | None,
                        interruption_id: int | None, create: bool) -> None:
        if state not in HOST_STATES:
            raise ValueError(f"host state must be one of {', '.join(HOST_STATES)}, not {state!r}")
        h = s.get(Host, name)
        if h is None:
            if not create:
                raise NotFoundError(f"no host named {name!r} in the catalog")
            h = Host(name=name, state="healthy")
            s.add(h)
            s.flush()
        s.add(HostEvent(host_name=name, from_state=h.state, to_state=state, reason=reason,
                        actor=actor, interruption_id=interruption_id))
        h.state, h.reason = state, reason

    def returned_to_service(self) -> dict[str, datetime]:
        """When each host was last returned to service (uncordoned or repaired): its record restarts there."""
        with self.session() as s:
            rows = s.execute(select(HostEvent.host_name, func.max(HostEvent.at))
                             .where(HostEvent.to_state.in_(("repaired", "healthy")))
                             .group_by(HostEvent.host_name))
            return {h: at for h, at in rows}

    def cordoned_hosts(self) -> set[str]:
        with self.session() as s:
            return set(s.scalars(select(Host.name).where(Host.state == "cordoned")).all())
