"""Catalog access: sessions, inserts and queries. No policy decisions here."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from datetime import datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.exc import OperationalError, SQLAlchemyError
from sqlalchemy.orm import Session, selectinload, sessionmaker

from orchestrator.catalog.db import CatalogError, _first_line, make_engine, redact, upgrade_schema
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


class NotFoundError(LookupError):
    """A job, host or incident the caller named does not exist."""


class Catalog:
    """The catalog of one deployment, on SQLite or PostgreSQL."""

    def __init__(self, url: str, *, migrate: bool = True) -> None:
        self.url = url
        self.engine = make_engine(url)
        if migrate:
            upgrade_schema(self.engine)
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
            for k, v in fields.items():
                setattr(job, k, v)

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
            for k, v in fields.items():
                setattr(a, k, v)

    def upsert_rank(self, attempt_id: int, rank: int, **fields: Any) -> None:
        with self.session() as s:
            r = s.scalars(select(RankRecord).where(RankRecord.attempt_id == attempt_id,
                                                   RankRecord.rank == rank)).first()
            if r is None:
                r = RankRecord(attempt_id=attempt_id, rank=rank, state=fields.pop("state", "starting"))
                s.add(r)
            for k, v in fields.items():
                setattr(r, k, v)

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
    def record_interruption(self, **fields: Any) -> int:
        with self.session() as s:
            row = Interruption(**fields)
            s.add(row)
            s.flush()
            return row.id

    def update_interruption(self, interruption_id: int, **fields: Any) -> None:
        with self.session() as s:
            row = s.get(Interruption, interruption_id)
            if row is None:
                raise NotFoundError(f"no incident with id {interruption_id}")
            for k, v in fields.items():
                setattr(row, k, v)

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
        if state not in HOST_STATES:
            raise ValueError(f"host state must be one of {', '.join(HOST_STATES)}, not {state!r}")
        with self.session() as s:
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

    def cordoned_hosts(self) -> set[str]:
        with self.session() as s:
            return set(s.scalars(select(Host.name).where(Host.state == "cordoned")).all())
