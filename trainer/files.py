"""File helpers without torch, so the job-file validator and readers stay cheap to import."""

from __future__ import annotations

import contextlib
import glob
import os
from pathlib import Path
from typing import Any

import orjson


def resolve_files(patterns: list[str]) -> list[str]:
    """Every file matched by the globs or folders in `patterns`, sorted by path."""
    files: set[str] = set()
    for pat in patterns:
        if os.path.isdir(pat):
            pat = os.path.join(pat, "**", "*")
        files.update(f for f in glob.glob(pat, recursive=True) if os.path.isfile(f))
    return sorted(files)


def read_jsonl(path: str | os.PathLike[str]) -> list[dict[str, Any]]:
    """The JSON objects of a .jsonl file; a line still being written is skipped."""
    p = Path(path)
    if not p.exists():
        return []
    rows = []
    with p.open("rb") as f:  # line by line: a long run's file is hundreds of megabytes
        for line in f:
            with contextlib.suppress(ValueError):  # orjson.JSONDecodeError is a ValueError
                rows.append(orjson.loads(line))
    return rows
