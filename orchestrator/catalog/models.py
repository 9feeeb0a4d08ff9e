"""SQLAlchemy 2 models of the catalog: jobs, attempts, ranks, hosts, checkpoints, interruptions.

The schema is owned by the Alembic migrations next to this file; these models
must match them (a test checks that autogenerate finds no difference).
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import JSON, Boolean, DateTime, Float, ForeignKey, Integer, String, Text, UniqueConstraint
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship


def utcnow() -> datetime:
    return datetime.now(UTC)


class Base(DeclarativeBase):
    type_annotation_map = {dict[str, Any]: JSON, list[Any]: JSON}


class Job(Base):
    __tablename__ = "jobs"

    name: Mapped[str] = mapped_column(String(63), primary_key=True)
    state: Mapped[str] = mapped_column(String(16), index=True)
    spec: Mapped[dict[str, Any]] = mapped_column(JSON)
    world_size: Mapped[int] = mapped_column(Integer)
    steps_total: Mapped[int] = mapped_column(Integer)
    submitted_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    started_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    ended_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow, onupdate=utcnow)
    controller_heartbeat_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    current_attempt: Mapped[int] = mapped_column(Integer, default=0)
    last_step: Mapped[int] = mapped_column(Integer, default=0)
    last_loss: Mapped[float | None] = mapped_column(Float)
    tokens_per_second: Mapped[float | None] = mapped_column(Float)
    reason: Mapped[str | None] = mapped_column(Text)
    run_dir: Mapped[str] = mapped_column(Text)
    ray_address: Mapped[str | None] = mapped_column(Text)
    ray_embedded: Mapped[bool] = mapped_column(Boolean, default=False)
    """The job ran on the embedded cluster its `submit` started (token auth, local token file)."""
    metrics_url: Mapped[str | None] = mapped_column(Text)
    """Where the job's controller serves /metrics (null until its exporter is up)."""

    attempts: Mapped[list[Attempt]] = relationship(back_populates="job", cascade="all, delete-orphan",
                                                   order_by="Attempt.number")


class Attempt(Base):
    """One gang launch of every rank; a restart starts a new attempt."""

    __tablename__ = "attempts"
    __table_args__ = (UniqueConstraint("job_name", "number"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    job_name: Mapped[str] = mapped_column(ForeignKey("jobs.name", ondelete="CASCADE"), index=True)
    number: Mapped[int] = mapped_column(Integer)
    state: Mapped[str] = mapped_column(String(16))
    started_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    first_step_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    ended_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    start_step: Mapped[int] = mapped_column(Integer, default=0)
    end_step: Mapped[int | None] = mapped_column(Integer)
    layout: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    reason: Mapped[str | None] = mapped_column(Text)

    job: Mapped[Job] = relationship(back_populates="attempts")
    ranks: Mapped[list[RankRecord]] = relationship(back_populates="attempt", cascade="all, delete-orphan",
                                                   order_by="RankRecord.rank")


class RankRecord(Base):
    __tablename__ = "ranks"
    __table_args__ = (UniqueConstraint("attempt_id", "rank"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    attempt_id: Mapped[int] = mapped_column(ForeignKey("attempts.id", ondelete="CASCADE"), index=True)
    rank: Mapped[int] = mapped_column(Integer)
    host: Mapped[str | None] = mapped_column(String(255))
    node_id: Mapped[str | None] = mapped_column(String(64))
    pid: Mapped[int | None] = mapped_column(Integer)
    state: Mapped[str] = mapped_column(String(16))
    step: Mapped[int] = mapped_column(Integer, default=0)
    exit_code: Mapped[int | None] = mapped_column(Integer)
    signal: Mapped[str | None] = mapped_column(String(16))
    started_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    ended_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    log_path: Mapped[str | None] = mapped_column(Text)

    attempt: Mapped[Attempt] = relationship(back_populates="ranks")


class Host(Base):
    """A Ray node as the catalog knows it; cordoned hosts are never placed on."""

    __tablename__ = "hosts"

    name: Mapped[str] = mapped_column(String(255), primary_key=True)
    node_id: Mapped[str | None] = mapped_column(String(64))
    address: Mapped[str | None] = mapped_column(String(255))
    state: Mapped[str] = mapped_column(String(16), default="healthy")
    reason: Mapped[str | None] = mapped_column(Text)
    first_seen_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow, onupdate=utcnow)

    events: Mapped[list[HostEvent]] = relationship(back_populates="host", cascade="all, delete-orphan",
                                                   order_by="HostEvent.at")


class HostEvent(Base):
    """History of a host's state: every cordon, uncordon and suspicion."""

    __tablename__ = "host_events"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    host_name: Mapped[str] = mapped_column(ForeignKey("hosts.name", ondelete="CASCADE"), index=True)
    at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    from_state: Mapped[str | None] = mapped_column(String(16))
    to_state: Mapped[str] = mapped_column(String(16))
    reason: Mapped[str | None] = mapped_column(Text)
    actor: Mapped[str | None] = mapped_column(String(255))
    interruption_id: Mapped[int | None] = mapped_column(Integer)

    host: Mapped[Host] = relationship(back_populates="events")


class CheckpointRecord(Base):
    __tablename__ = "checkpoints"
    __table_args__ = (UniqueConstraint("job_name", "step"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    job_name: Mapped[str] = mapped_column(ForeignKey("jobs.name", ondelete="CASCADE"), index=True)
    step: Mapped[int] = mapped_column(Integer)
    path: Mapped[str] = mapped_column(Text)
    attempt: Mapped[int] = mapped_column(Integer)
    committed_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    blocked_seconds: Mapped[float | None] = mapped_column(Float)
    save_seconds: Mapped[float | None] = mapped_column(Float)


class Interruption(Base):
    """One interruption of a job, planned or not, with its evidence and timings."""

    __tablename__ = "interruptions"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    job_name: Mapped[str] = mapped_column(ForeignKey("jobs.name", ondelete="CASCADE"), index=True)
    attempt: Mapped[int] = mapped_column(Integer)
    planned: Mapped[bool] = mapped_column(Boolean, default=False)
    category: Mapped[str] = mapped_column(String(48), index=True)
    component: Mapped[str] = mapped_column(String(32))
    confidence: Mapped[float] = mapped_column(Float, default=0.0)
    explanation: Mapped[str | None] = mapped_column(Text)
    kind: Mapped[str] = mapped_column(String(32))
    """What was observed: crash, hang, straggler, bad_gpu, node_lost, operator_stop, ..."""
    ranks: Mapped[list[Any]] = mapped_column(JSON, default=list)
    hosts: Mapped[list[Any]] = mapped_column(JSON, default=list)
    gpus: Mapped[list[Any]] = mapped_column(JSON, default=list)
    evidence: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    evidence_text: Mapped[str | None] = mapped_column(Text)
    fault_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    detected_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    stopped_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    resumed_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    step_at_fault: Mapped[int | None] = mapped_column(Integer)
    resume_step: Mapped[int | None] = mapped_column(Integer)
    steps_lost: Mapped[int | None] = mapped_column(Integer)
    time_lost: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    status: Mapped[str] = mapped_column(String(16), default="open")
    acknowledged_by: Mapped[str | None] = mapped_column(String(255))
    acknowledged_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    resolved_by: Mapped[str | None] = mapped_column(String(255))
    resolved_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    notes: Mapped[list[Any]] = mapped_column(JSON, default=list)
    classification_history: Mapped[list[Any]] = mapped_column(JSON, default=list)
