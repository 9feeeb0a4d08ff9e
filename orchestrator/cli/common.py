"""Shared CLI plumbing: options, one-line errors, JSON output, catalog opening."""

from __future__ import annotations

import json
import sys
from datetime import datetime
from pathlib import Path
from typing import Annotated, Any, NoReturn

import typer
from rich.console import Console

from orchestrator.catalog.db import CatalogError
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


def fail(message: str, code: int = EXIT_FAILED) -> NoReturn:
    err_console.print(f"[red]error:[/red] {message}", highlight=False, soft_wrap=True)
    raise typer.Exit(code)


def open_catalog(state: Path | None, db: str | None, *, must_exist: bool = False) -> Catalog:
    sd = state_dir(state)
    url = db_url(sd, db)
    if must_exist and url.startswith("sqlite:///") and not Path(url.removeprefix("sqlite:///")).exists():
        fail(f"no catalog at {url.removeprefix('sqlite:///')} (wrong --state-dir or --db?)", EXIT_USAGE)
    try:
        return Catalog(url)
    except CatalogError as e:
        fail(str(e))


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
