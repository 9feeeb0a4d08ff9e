"""The reliability dashboard's panels drawn for the HTML report, so a run can be looked at without a Grafana.

Drawn from what the exporter's metrics come from (the catalog and
metrics.jsonl, through the same `job_report` the text report prints), so the
pictures match the Grafana panels of dashboards/reliability.json: time lost by
cause, interruptions by category (Table 5) and component, detection and
restart latency, checkpoint durations, hosts by state, step time and tokens/s.
"""

from __future__ import annotations

import base64
import io
from collections import Counter
from typing import Any

from orchestrator.catalog.db import as_utc
from orchestrator.catalog.repository import Catalog
from orchestrator.goodput import ts


def panel_data(cat: Catalog, job_name: str) -> dict[str, Any]:
    """What the panels need beyond `job_report`: checkpoints and hosts."""
    ck = [(c.step, c.blocked_seconds, c.save_seconds, ts(as_utc(c.committed_at))) for c in cat.checkpoints(job_name)]
    return {"checkpoints": ck, "hosts": Counter(h.state for h in cat.hosts())}


def _png(fig: Any) -> str:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=90, bbox_inches="tight")
    return base64.b64encode(buf.getvalue()).decode()


def render_panels(r: dict[str, Any], rows: list[dict[str, Any]], extra: dict[str, Any]) -> list[tuple[str, str]]:
    """(alt text, base64 PNG) per panel of one job's report."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out = []
    views = [v for v in r["_views"] if not v.planned and v.interrupting]

    fig, ax = plt.subplots(figsize=(6, 2.8))
    causes = r["time_lost_seconds"]
    ax.barh(list(causes), list(causes.values()), color="#c55")
    ax.invert_yaxis()
    ax.set_xlabel("seconds")
    ax.set_title("Time lost by cause")
    out.append(("time lost by cause", _png(fig)))
    plt.close(fig)

    fig, (a1, a2) = plt.subplots(1, 2, figsize=(10, 2.8))
    cats = Counter(v.category for v in views)
    comps = Counter(v.component for v in views)
    a1.barh(list(cats) or ["none"], list(cats.values()) or [0], color="#36c")
    a1.set_title("Unexpected interruptions by category (Table 5)")
    a2.barh(list(comps) or ["none"], list(comps.values()) or [0], color="#69c")
    a2.set_title("... by component")
    for a in (a1, a2):
        a.set_xlabel("count")
    out.append(("interruptions by category", _png(fig)))
    plt.close(fig)

    fig, ax = plt.subplots(figsize=(6, 2.8))
    labels = [f"#{v.id} {v.category}" for v in views]
    det = [(v.detected_at - v.fault_at) if v.fault_at and v.detected_at else 0.0 for v in views]
    rst = [(v.resumed_at - (v.stopped_at or v.detected_at)) if v.resumed_at and (v.stopped_at or v.detected_at)
           else 0.0 for v in views]
    y = range(len(views))
    ax.barh([i - 0.2 for i in y], det, height=0.4, label="detection (fault to finding)", color="#e90")
    ax.barh([i + 0.2 for i in y], rst, height=0.4, label="restart (stopped to first step)", color="#2a6")
    ax.set_yticks(list(y), labels)
    ax.set_xlabel("seconds")
    ax.set_title("Detection and restart latency per interruption")
    ax.legend(fontsize=8)
    out.append(("detection and restart latency", _png(fig)))
    plt.close(fig)

    fig, ax = plt.subplots(figsize=(6, 2.8))
    ck = extra["checkpoints"]
    ax.plot([c[0] for c in ck], [c[1] or 0 for c in ck], "o-", label="blocked (loop waited)")
    ax.plot([c[0] for c in ck], [c[2] or 0 for c in ck], "s-", label="save (whole write)")
    ax.set_xlabel("checkpoint step")
    ax.set_ylabel("seconds")
    ax.set_title("Checkpoint durations")
    ax.legend(fontsize=8)
    out.append(("checkpoint durations", _png(fig)))
    plt.close(fig)

    fig, ax = plt.subplots(figsize=(4, 2.8))
    hosts = extra["hosts"]
    states = ["healthy", "suspect", "cordoned"]
    ax.bar(states, [hosts.get(s, 0) for s in states], color=["#2a6", "#e90", "#c33"])
    ax.set_title("Hosts by state")
    out.append(("hosts by state", _png(fig)))
    plt.close(fig)

    fig, ax = plt.subplots(figsize=(8, 2.8))
    start = r["started_at"]
    t = [(x["time"] - start) / 60 for x in rows]
    ax.plot(t, [x["tokens"] / x["step_seconds"] if x.get("step_seconds") else 0 for x in rows], ".", ms=3)
    ax.set_xlabel("minutes since start")
    ax.set_ylabel("tokens/s")
    ax.set_title("Training throughput (rank 0), restarts show as gaps")
    ax2 = ax.twinx()
    ax2.plot(t, [x["step_seconds"] for x in rows], ".", ms=2, color="#aaa")
    ax2.set_ylabel("step seconds", color="#888")
    out.append(("tokens per second", _png(fig)))
    plt.close(fig)
    return out
