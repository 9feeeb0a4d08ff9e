"""ETTR and the goodput breakdown, computed from the catalog and metrics.jsonl.

ETTR = productive training time / wall-clock time since the job started.
Productive time counts only steps whose results survived: a step written again
by a later attempt counts once, in its last version; earlier versions are lost
work. The rest of the wall clock is attributed to causes (DESIGN.md): detection
(fault to Finding), restart (Finding to the first step after resume, teardown
included), lost work, checkpoint stall (time the loop waited on saves),
startup (first launch until the first step), preflight (the checks before
each start and restart, carved out of startup and restart, where they fall),
and what remains unattributed.
Pure functions over plain rows, so the simulation can use them too.
"""

from __future__ import annotations

import statistics
from collections import Counter, defaultdict
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from orchestrator.taxonomy import CATEGORIES, COMPONENT_OF
from trainer.files import read_jsonl

CAUSES = ("detection", "restart", "lost_work", "checkpoint_stall", "startup", "preflight", "unattributed")
NON_INTERRUPTING_KINDS = frozenset({"straggler", "checkpoint_failed"})
"""Events recorded while training went on: they cost no restart and no lost steps."""


@dataclass(frozen=True, slots=True)
class InterruptionView:
    """What the report needs of one interruption."""

    id: int
    kind: str
    category: str
    component: str
    planned: bool
    fault_at: float | None
    detected_at: float | None
    stopped_at: float | None
    resumed_at: float | None
    steps_lost: int | None
    hosts: tuple[str, ...] = ()

    @property
    def interrupting(self) -> bool:
        return self.kind not in NON_INTERRUPTING_KINDS


def read_metrics(path: str | Path) -> list[dict[str, Any]]:
    return read_jsonl(path)


def split_rows(rows: list[dict[str, Any]]) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """(surviving rows, superseded rows): for each step, the last written version survives."""
    last: dict[int, int] = {}
    for i, r in enumerate(rows):
        last[r["step"]] = i
    keep = set(last.values())
    return [r for i, r in enumerate(rows) if i in keep], [r for i, r in enumerate(rows) if i not in keep]


def ts(dt: datetime | None) -> float | None:
    return None if dt is None else dt.timestamp()


def stall_seconds(row: dict[str, Any]) -> float:
    """Seconds of a step's time spent saving, not training: a checkpoint's blocking part and a snapshot."""
    return float(row.get("checkpoint_blocked_seconds") or 0.0) + float(row.get("snapshot_seconds") or 0.0)


def preflight_seconds(layouts: list[dict[str, Any] | None]) -> list[float]:
    """Each attempt's preflight time (its layout's `preflight_s`), in attempt order."""
    return [float((lay or {}).get("preflight_s") or 0.0) for lay in layouts]


def goodput(started_at: float, ended_at: float, rows: list[dict[str, Any]],
            interruptions: list[InterruptionView], preflight_s: list[float] | None = None) -> dict[str, Any]:
    """`preflight_s`: each attempt's preflight time in attempt order (the first falls in startup, later ones
    in the restart after an interruption)."""
    wall = max(0.0, ended_at - started_at)
    alive, redone = split_rows(rows)
    stall = sum(stall_seconds(r) for r in alive)
    productive = sum(r["step_seconds"] for r in alive) - stall
    lost = sum(r["step_seconds"] for r in redone)
    detection = restart = 0.0
    for i in interruptions:
        if i.planned or not i.interrupting:
            continue
        if i.fault_at is not None and i.detected_at is not None:
            detection += max(0.0, i.detected_at - i.fault_at)
        if i.detected_at is not None and i.resumed_at is not None:
            restart += max(0.0, i.resumed_at - i.detected_at)
    startup = 0.0
    if rows:
        first = rows[0]
        startup = max(0.0, first["time"] - first["step_seconds"] - started_at)
    pf = list(preflight_s or [])
    first_pf = min(pf[0], startup) if pf else 0.0
    later_pf = min(sum(pf[1:]), restart)
    causes = {"detection": detection, "restart": restart - later_pf, "lost_work": lost, "checkpoint_stall": stall,
              "startup": startup - first_pf, "preflight": first_pf + later_pf}
    causes["unattributed"] = max(0.0, wall - productive - sum(causes.values()))
    return {"wall_seconds": wall, "productive_seconds": productive,
            "ettr": productive / wall if wall > 0 else None, "time_lost_seconds": causes,
            "steps_completed": len(alive), "steps_redone": len(redone)}


def table5(interruptions: list[InterruptionView], rows: list[dict[str, Any]], wall_s: float) -> dict[str, Any]:
    """Counts and shares per category (unexpected interruptions only), time lost per category, MTBF."""
    unexpected = [i for i in interruptions if not i.planned and i.interrupting]
    counts = Counter(i.category for i in unexpected)
    step_s = statistics.median([r["step_seconds"] for r in rows]) if rows else 0.0
    lost: dict[str, float] = defaultdict(float)
    for i in unexpected:
        if i.fault_at is not None and i.resumed_at is not None:
            lost[i.category] += max(0.0, i.resumed_at - i.fault_at)
        lost[i.category] += (i.steps_lost or 0) * step_s
    planned = sum(1 for i in interruptions if i.planned)
    stragglers = sum(1 for i in interruptions if i.kind == "straggler")
    failed_saves = sum(1 for i in interruptions if i.kind == "checkpoint_failed")
    return _table5_dict(counts, lost, planned, stragglers, wall_s, failed_saves)


def _table5_dict(counts: Counter[str], lost: dict[str, float], planned: int, stragglers: int,
                 wall_s: float, checkpoint_failures: int = 0) -> dict[str, Any]:
    total = sum(counts.values())
    table = [
        {"category": c, "component": COMPONENT_OF[c], "count": counts[c],
         "share": counts[c] / total if total else 0.0, "time_lost_seconds": lost.get(c, 0.0)}
        for c in CATEGORIES if counts[c]
    ]
    table.sort(key=lambda r: (-r["count"], r["category"]))
    by_component: Counter[str] = Counter()
    for c, n in counts.items():
        by_component[COMPONENT_OF[c]] += n
    return {
        "unexpected_interruptions": total,
        "planned_interruptions": planned,
        "stragglers": stragglers,
        "checkpoint_failures": checkpoint_failures,
        "categories": table,
        "components": {k: {"count": v, "share": v / total} for k, v in sorted(by_component.items())},
        "mtbf_seconds": wall_s / total if total else None,
    }


def merge_table5(tables: list[dict[str, Any]], wall_s: float) -> dict[str, Any]:
    """Several jobs' Table-5 views as one: counts and time lost add up, shares and MTBF are recomputed.

    Each job's lost work was priced at its own step time, so the jobs are merged
    rather than their interruptions pooled without step times.
    """
    counts: Counter[str] = Counter()
    lost: dict[str, float] = defaultdict(float)
    for t in tables:
        for row in t["categories"]:
            counts[row["category"]] += row["count"]
            lost[row["category"]] += row["time_lost_seconds"]
    return _table5_dict(counts, lost, sum(t["planned_interruptions"] for t in tables),
                        sum(t["stragglers"] for t in tables), wall_s,
                        sum(t.get("checkpoint_failures", 0) for t in tables))


def ettr_series(started_at: float, rows: list[dict[str, Any]]) -> list[tuple[float, float]]:
    """(time, ETTR so far) after each written step, lost work counted as it is discovered.

    Linear in the rows: the surviving steps form a stack ordered by step, since a
    written step rolls back every step beyond it (a restart) and replaces its own
    earlier version; the productive total is kept as a running sum.
    """
    out = []
    steps: list[int] = []
    values: list[float] = []
    total = 0.0
    for r in rows:
        step = r["step"]
        while steps and steps[-1] >= step:
            steps.pop()
            total -= values.pop()
        value = r["step_seconds"] - stall_seconds(r)
        steps.append(step)
        values.append(value)
        total += value
        if len(steps) == 1:
            total = value  # an emptied stack resets the running sum's rounding
        elapsed = r["time"] - started_at
        if elapsed > 0:
            out.append((r["time"], total / elapsed))
    return out
