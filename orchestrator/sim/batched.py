"""A catalog whose writes share one transaction, committed at the end (or every N events).

The simulation records hundreds of interruptions in seconds; one transaction per
event (what the controller does, and must do, in production) makes the
catalog the slowest part of a run. The rows written are the same, and a run
that fails part-way leaves nothing behind (`rollback`).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from sqlalchemy.orm import Session

from orchestrator.catalog.repository import Catalog


class BatchedCatalog(Catalog):
    def __init__(self, url: str, *, events_per_commit: int = 0) -> None:
        super().__init__(url)
        self.events_per_commit = events_per_commit
        self._open: Session | None = None
        self._events = 0

    @contextmanager
    def session(self) -> Iterator[Session]:
        if self._open is None:
            self._open = self._sessions()
            self._open.begin()
        yield self._open
        self._open.flush()
        self._events += 1
        if self.events_per_commit and self._events >= self.events_per_commit:
            self.commit()

    def commit(self) -> None:
        if self._open is not None:
            self._open.commit()
            self._open.close()
            self._open = None
        self._events = 0

    def rollback(self) -> None:
        if self._open is not None:
            self._open.rollback()
            self._open.close()
            self._open = None
        self._events = 0

    def close(self) -> None:
        self.commit()
        super().close()
