"""Engine creation, SQLite pragmas and schema migration for the catalog."""

from __future__ import annotations

import fcntl
import os
import sqlite3
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Engine, create_engine, event, text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError, OperationalError, SQLAlchemyError

ALEMBIC_INI = Path(__file__).with_name("alembic.ini")


class CatalogError(RuntimeError):
    """The catalog cannot be used (unreachable, unreadable, wrong schema)."""


class SchemaBehindError(CatalogError):
    """The catalog's schema is older (or newer) than this version's; `orchestrator db upgrade` fixes older."""


class CatalogURLError(CatalogError):
    """The database URL itself is wrong (malformed, unknown driver, folder that cannot be made)."""


def redact(url: str) -> str:
    try:
        return make_url(url).render_as_string(hide_password=True)
    except ArgumentError:
        return url


def sqlite_url(path: str | os.PathLike[str]) -> str:
    return f"sqlite:///{Path(path).resolve()}"


WAL_SWITCH_TRIES = 200
"""Tries, 50 ms apart, to switch a new SQLite catalog to WAL while another client holds it."""


def _sqlite_pragmas(dbapi_conn, _record) -> None:  # type: ignore[no-untyped-def]
    cur = dbapi_conn.cursor()
    # WAL lets `status` read while the controller writes; busy_timeout makes
    # concurrent writers wait instead of failing.
    cur.execute("PRAGMA busy_timeout=10000")
    # Switching a new file to WAL needs it alone and can fail at once, without the busy handler, while another
    # client opens the same new catalog: try again for a while.
    for attempt in range(WAL_SWITCH_TRIES):
        try:
            cur.execute("PRAGMA journal_mode=WAL")
            break
        except sqlite3.OperationalError as e:
            if "locked" not in str(e) or attempt == WAL_SWITCH_TRIES - 1:
                raise
            time.sleep(0.05)
    cur.execute("PRAGMA foreign_keys=ON")
    cur.execute("PRAGMA synchronous=NORMAL")
    cur.close()


def make_engine(url: str) -> Engine:
    try:
        parsed = make_url(url)
    except ArgumentError:
        raise CatalogURLError(f"database URL {url!r} is not a valid SQLAlchemy URL") from None
    if parsed.drivername.startswith("sqlite"):
        db = parsed.database
        if db and db != ":memory:":
            try:
                Path(db).parent.mkdir(parents=True, exist_ok=True)
            except OSError as e:
                raise CatalogURLError(f"database URL {url!r}: cannot create folder {Path(db).parent}: "
                                      f"{e.strerror or e}") from None
        engine = create_engine(url, connect_args={"timeout": 30})
        event.listen(engine, "connect", _sqlite_pragmas)
        return engine
    if parsed.drivername in ("postgresql", "postgres"):
        url = parsed.set(drivername="postgresql+psycopg").render_as_string(hide_password=False)
    try:
        return create_engine(url, pool_pre_ping=True, connect_args=_connect_args(url))
    except (ArgumentError, ImportError) as e:
        raise CatalogURLError(f"database URL {redact(url)}: {_first_line(e)}") from None


def _connect_args(url: str) -> dict[str, object]:
    return {"connect_timeout": 5} if make_url(url).drivername.startswith("postgresql") else {}


def _alembic_config() -> Config:
    cfg = Config(str(ALEMBIC_INI))
    cfg.set_main_option("script_location", str(ALEMBIC_INI.parent / "migrations"))
    return cfg


def head_revision() -> str:
    """The schema revision this version of the code needs."""
    head = ScriptDirectory.from_config(_alembic_config()).get_current_head()
    assert head is not None
    return head


def current_revision(engine: Engine) -> str | None:
    """The revision the database is at; None for an empty database."""
    with _db_errors(engine), engine.connect() as conn:
        return MigrationContext.configure(conn).get_current_revision()


def check_schema(engine: Engine) -> None:
    """Refuse a catalog whose schema is not this version's, without changing it (read-only commands)."""
    current, head = current_revision(engine), head_revision()
    if current != head:
        raise SchemaBehindError(f"the catalog at {redact(str(engine.url))} is at revision {current or 'none (empty)'}, "
                                f"this version needs {head}: run `orchestrator db upgrade`")


def upgrade_schema(engine: Engine) -> bool:
    """Bring the schema to the newest revision; True when it had to change anything.

    Holds a lock across the check and the upgrade, so two clients opening a new
    database at once do not both try to create it: a file lock beside an SQLite
    database, a session-level advisory lock on PostgreSQL.
    """
    head = head_revision()
    if current_revision(engine) == head:
        return False
    with _db_errors(engine), _migration_lock(engine), engine.connect() as conn:
        if MigrationContext.configure(conn).get_current_revision() == head:
            return False  # another client upgraded it while this one waited for the lock
        conn.rollback()
        sqlite = conn.dialect.name == "sqlite"
        if sqlite:
            # Batch migrations copy tables; with foreign keys on, dropping the old copy would
            # cascade-delete the rows that refer to it. The pragma only works outside a transaction.
            conn.exec_driver_sql("PRAGMA foreign_keys=OFF")
            conn.commit()
        try:
            with conn.begin():
                cfg = _alembic_config()
                cfg.attributes["connection"] = conn
                command.upgrade(cfg, "head")
        finally:
            if sqlite:
                conn.exec_driver_sql("PRAGMA foreign_keys=ON")
                conn.commit()
    return True


MIGRATION_LOCK_KEY = 0x6F72636865737472
"""pg_advisory_lock key of schema upgrades (any fixed 64-bit number; this one spells 'orchestr')."""


@contextmanager
def _migration_lock(engine: Engine) -> Iterator[None]:
    dialect = engine.dialect.name
    if dialect == "postgresql":
        with engine.connect() as conn:
            conn.execute(text("SELECT pg_advisory_lock(:k)"), {"k": MIGRATION_LOCK_KEY})
            conn.commit()
            try:
                yield
            finally:
                conn.execute(text("SELECT pg_advisory_unlock(:k)"), {"k": MIGRATION_LOCK_KEY})
                conn.commit()
        return
    db = engine.url.database if dialect == "sqlite" else None
    if not db or db == ":memory:":
        yield
        return
    with open(f"{db}.migrate.lock", "a") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


@contextmanager
def _db_errors(engine: Engine) -> Iterator[None]:
    """Database failures as one-line CatalogErrors naming the database."""
    try:
        yield
    except OperationalError as e:
        raise CatalogError(f"cannot reach database {redact(str(engine.url))}: {_first_line(e)}") from None
    except SQLAlchemyError as e:
        raise CatalogError(f"database {redact(str(engine.url))}: {_first_line(e)}") from None


def _first_line(e: BaseException) -> str:
    orig = getattr(e, "orig", None) or e
    return str(orig).strip().splitlines()[0] if str(orig).strip() else type(orig).__name__


def as_utc(dt: datetime | None) -> datetime | None:
    """SQLite hands back naive datetimes; the catalog writes UTC only."""
    if dt is None:
        return None
    return dt if dt.tzinfo is not None else dt.replace(tzinfo=UTC)
