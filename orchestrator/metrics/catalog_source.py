"""What the exporter (and the report) read from the catalog and metrics.jsonl to compute ETTR."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from orchestrator.catalog.db import as_utc
from orchestrator.catalog.models import Interruption
from orchestrator.goodput import InterruptionView, ts


def interruption_view(i: Interruption) -> InterruptionView:
    return InterruptionView(i.id, i.kind, i.category, i.component, i.planned, ts(as_utc(i.fault_at)),
                            ts(as_utc(i.detected_at)), ts(as_utc(i.stopped_at)), ts(as_utc(i.resumed_at)),
                            i.steps_lost, tuple(i.hosts))


class JsonlTail:
    """The rows of a growing .jsonl file, read incrementally (a long job's file is never reread whole)."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        self.rows: list[dict[str, Any]] = []
        self._offset = 0

    def read(self) -> list[dict[str, Any]]:
        try:
            size = self.path.stat().st_size
        except FileNotFoundError:
            return self.rows
        if size < self._offset:  # rewritten from the start (a fresh run)
            self.rows, self._offset = [], 0
        if size == self._offset:
            return self.rows
        with self.path.open("rb") as f:
            f.seek(self._offset)
            data = f.read(size - self._offset)
        end = data.rfind(b"\n")
        if end < 0:  # only a line still being written
            return self.rows
        for line in data[:end].splitlines():
            try:
                self.rows.append(json.loads(line))
            except ValueError:
                continue
        self._offset += end + 1
        return self.rows
