"""Shared CLI plumbing: options, one-line errors, JSON output, catalog opening."""

from __future__ import annotations

import json
import os
import sys
from datetime import datetime
from pathlib import Path
from typing import Annotated, Any, NoReturn

import typer
from rich.console import Console
from rich.markup import escape
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError

from orchestrator.catalog.db import CatalogError, CatalogURLError
from orchestrator.catalog.repository import Catalog
from orchestrator.paths import db_url, state_dir

console = Console()
err_console = Console(stderr=True)

EXIT_USAGE = 2
EXIT_FAILED = 1

StateDirOpt = Annotated[
    Path | None, typer.Option("--state-dir", help="State folder (default: $ORCHESTRATOR_HOME or ./.orchestrator)")
]
DbOpt = Annotated[str | None, typer.Option("--db", help="Catalog database URL (default: SQLite in the state folder)")]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print JSON instead of tables")]
WideOpt = Annotated[bool, typer.Option("--wide", help="Every column, full times, no wrapping (wider than 80 columns)")]


def say_error(message: str) -> None:
    """`error: ...` on stderr, one line however long; the message is shown as is, never read as markup."""
    err_console.print(f"[red]error:[/red] {escape(message)}", highlight=False, soft_wrap=True)


def fail(message: str, code: int = EXIT_FAILED) -> NoReturn:
    say_error(message)
    raise typer.Exit(code)


def no_conflict(json_out: bool, wide: bool) -> None:
    if json_out and wide:
        fail("--json and --wide cannot be used together (--json already prints every field)", EXIT_USAGE)


def open_catalog(state: Path | None, db: str | None, *, must_exist: bool = False, migrate: bool = False) -> Catalog:
    """The catalog; `must_exist` for commands that only read or act on what is there.

    Only `migrate=True` (`submit`, `db upgrade`) changes the schema; every other command
    refuses, in one line, a catalog whose schema is not this version's.
    """
    sd = state_dir(state)
    url = db_url(sd, db)
    sqlite_file = Path(url.removeprefix("sqlite:///")) if url.startswith("sqlite:///") else None
    if must_exist and sqlite_file is not None and not sqlite_file.is_file():
        fail(f"no catalog at {sqlite_file} (wrong --state-dir or --db?)", EXIT_USAGE)
    try:
        make_url(url)
    except ArgumentError:
        fail(f"database URL {url!r} (--db or $ORCHESTRATOR_DB) is not a URL such as postgresql://user@host/db",
             EXIT_USAGE)
    if not must_exist:
        _writable_folder(sd, "--state-dir" if state is not None else "state folder")
        if sqlite_file is not None and not sqlite_file.exists():
            _writable_folder(sqlite_file.parent, "--db")
    try:
        return Catalog(url, migrate=migrate)
    except CatalogURLError as e:
        fail(str(e), EXIT_USAGE)
    except CatalogError as e:
        fail(str(e))


def _writable_folder(folder: Path, what: str) -> None:
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        fail(f"{what} {folder}: cannot create the folder: {e.strerror or e}", EXIT_USAGE)
    if not os.access(folder, os.W_OK | os.X_OK):
        fail(f"{what} {folder}: the folder is not writable", EXIT_USAGE)


def to_jsonable(obj: Any) -> Any:
    if isinstance(obj, datetime):
        return obj.isoformat()
    if isinstance(obj, dict):
        return {k: to_jsonable(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [to_jsonable(v) for v in obj]
    return obj


def print_json(obj: Any) -> None:
    sys.stdout.write(json.dumps(to_jsonable(obj), indent=2) + "\n")


def fmt_time(dt: datetime | None) -> str:
    return "-" if dt is None else dt.astimezone().strftime("%Y-%m-%d %H:%M:%S")


def fmt_when(dt: datetime | None, now: datetime | None = None) -> str:
    """Short local time for narrow tables: `42s ago`, `17m ago`, `14:03:27` today, else the date.

    An hour or more ago on the same local day reads as the time of day; another day
    as `MM-DD HH:MM` this year and `YYYY-MM-DD` before it (`--wide` prints the full time).
    """
    if dt is None:
        return "-"
    now = (now or datetime.now(dt.tzinfo)).astimezone()
    local = dt.astimezone()
    ago = (now - local).total_seconds()
    if 0 <= ago < 60:
        return f"{int(ago)}s ago"
    if 0 <= ago < 3600:
        return f"{int(ago // 60)}m ago"
    if local.date() == now.date():
        return local.strftime("%H:%M:%S")
    if local.year == now.year:
        return local.strftime("%m-%d %H:%M")
    return local.strftime("%Y-%m-%d")
