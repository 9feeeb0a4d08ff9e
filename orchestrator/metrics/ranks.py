"""Per-rank step times reduced to series that stay usable at 16,384 ranks.

One series per rank would be 16,384 series per metric per job, rewritten every
scrape, and a Grafana panel cannot draw them. The exporter keeps instead: the
`top_k` slowest ranks (where a straggler shows up), one aggregate per host (the
slowest rank on it: a few thousand series at most) and a few quantiles over all
ranks (the baseline the slow ones are compared to). Pure, so the benchmark
times exactly what a scrape runs.
"""

from __future__ import annotations

import heapq
from dataclasses import dataclass

QUANTILES = (0.5, 0.9, 0.99, 1.0)


@dataclass(frozen=True, slots=True)
class RankSummary:
    top: list[tuple[int, str, float]]
    """(rank, host, step seconds) of the slowest ranks, slowest first."""
    host_max: dict[str, float]
    """Slowest rank's step seconds per host."""
    quantiles: dict[float, float]
    """Step-seconds quantiles over every rank (1.0 is the slowest)."""


def summarize(step_seconds: dict[int, float], hosts: dict[int, str], top_k: int) -> RankSummary:
    if not step_seconds:
        return RankSummary([], {}, {})
    top = heapq.nlargest(top_k, step_seconds.items(), key=lambda kv: (kv[1], -kv[0])) if top_k else []
    host_max: dict[str, float] = {}
    for rank, s in step_seconds.items():
        h = hosts.get(rank, "unknown")
        if s > host_max.get(h, -1.0):
            host_max[h] = s
    values = sorted(step_seconds.values())
    n = len(values)
    quantiles = {q: values[min(n - 1, int(q * n))] if q < 1.0 else values[-1] for q in QUANTILES}
    return RankSummary([(r, hosts.get(r, "unknown"), s) for r, s in top], host_max, quantiles)
