"""Lemon hosts: hosts with repeated hardware interruptions are kept out.

Meta's research clusters cut failures of 512+-GPU jobs from 14% to 4% by
removing lemon nodes (Kokolis et al., 2024). A host with `threshold` or more
unplanned hardware interruptions within `window` is a lemon; the controller
cordons it, and `hosts list` shows it.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from orchestrator.catalog.db import as_utc
from orchestrator.catalog.repository import Catalog
from orchestrator.taxonomy import HARDWARE_CATEGORIES

LEMON_THRESHOLD = 2
LEMON_WINDOW = timedelta(days=30)


@dataclass(frozen=True, slots=True)
class LemonReport:
    counts: dict[str, int]
    """Unplanned hardware interruptions per host within the window."""
    lemons: set[str]


def lemon_hosts(cat: Catalog, *, threshold: int = LEMON_THRESHOLD, window: timedelta = LEMON_WINDOW,
                now: datetime | None = None) -> LemonReport:
    since = (now or datetime.now(UTC)) - window
    returned = {h: as_utc(t) for h, t in cat.returned_to_service().items()}
    counts: Counter[str] = Counter()
    for i in cat.interruptions(since=since):
        when = as_utc(i.detected_at)
        if i.planned or i.category not in HARDWARE_CATEGORIES or when is None or when < since:
            continue
        for h in set(i.hosts):
            back = returned.get(h)
            if back is None or when > back:  # a repaired host starts a clean record
                counts[h] += 1
    return LemonReport(dict(counts), {h for h, n in counts.items() if n >= threshold})
