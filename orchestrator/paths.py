"""Where a deployment keeps its state: the catalog and every job's run folder."""

from __future__ import annotations

import os
from pathlib import Path

from orchestrator.catalog.db import sqlite_url

ENV_HOME = "ORCHESTRATOR_HOME"
ENV_DB = "ORCHESTRATOR_DB"
DEFAULT_DIR = ".orchestrator"


def state_dir(explicit: str | os.PathLike[str] | None = None) -> Path:
    """--state-dir, else $ORCHESTRATOR_HOME, else .orchestrator/ in the working directory."""
    raw = explicit or os.environ.get(ENV_HOME) or DEFAULT_DIR
    return Path(raw).expanduser().resolve()


def db_url(state: Path, explicit: str | None = None) -> str:
    return explicit or os.environ.get(ENV_DB) or sqlite_url(state / "catalog.db")


def run_dir(state: Path, job: str) -> Path:
    return state / "runs" / job
