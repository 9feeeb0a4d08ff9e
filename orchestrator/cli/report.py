"""`orchestrator report`: ETTR, goodput breakdown, Table-5 view, time lost per category."""

from __future__ import annotations

import base64
import html
import io
import os
import time
from pathlib import Path
from typing import Annotated, Any

import typer

from orchestrator.catalog.db import as_utc
from orchestrator.catalog.models import Job
from orchestrator.catalog.repository import Catalog
from orchestrator.cli.common import (
    EXIT_USAGE,
    DbOpt,
    JsonOpt,
    StateDirOpt,
    WideOpt,
    console,
    fail,
    no_conflict,
    open_catalog,
    print_json,
)
from orchestrator.cli.report_panels import panel_data, render_panels
from orchestrator.cli.tables import Col, print_table
from orchestrator.goodput import (
    ettr_series,
    goodput,
    merge_table5,
    preflight_seconds,
    read_metrics,
    table5,
    ts,
)
from orchestrator.metrics.catalog_source import interruption_view
from orchestrator.taxonomy import CATEGORIES


def job_report(cat: Catalog, job: Job) -> dict[str, Any]:
    rows = read_metrics(Path(job.run_dir) / "metrics.jsonl")
    views = [interruption_view(i) for i in cat.interruptions(job.name)]
    started = ts(as_utc(job.started_at)) or (rows[0]["time"] - rows[0]["step_seconds"] if rows else time.time())
    ended = ts(as_utc(job.ended_at)) or time.time()
    attempts = (cat.get_job(job.name) or job).attempts  # a listed job comes without its attempts
    g = goodput(started, ended, rows, views, preflight_seconds([a.layout for a in attempts]))
    return {"job": job.name, "state": job.state, "started_at": started, "ended_at": ended, **g,
            "table5": table5(views, rows, g["wall_seconds"]),
            "_series": ettr_series(started, rows), "_views": views, "_rows": rows,
            "_target": (job.spec.get("metrics") or {}).get("ettr_target"), "_panels": panel_data(cat, job.name)}


def report(
    job: Annotated[str | None, typer.Argument(help="Job name (default: every job)")] = None,
    html_path: Annotated[Path | None, typer.Option("--html", help="Also write an HTML report with plots")] = None,
    db: DbOpt = None, state_dir_opt: StateDirOpt = None, json_out: JsonOpt = False, wide: WideOpt = False,
) -> None:
    """ETTR and where the rest of the time went, per job and over all jobs."""
    no_conflict(json_out, wide)
    if html_path is not None:
        _check_html_path(html_path)
    cat = open_catalog(state_dir_opt, db, must_exist=True)
    jobs = cat.list_jobs() if job is None else [cat.job_row(job)]
    if jobs == [None]:
        fail(f"no job named {job!r} in the catalog", EXIT_USAGE)
    reports = [job_report(cat, j) for j in jobs if j is not None]
    wall = sum(r["wall_seconds"] for r in reports)
    productive = sum(r["productive_seconds"] for r in reports)
    overall = {"jobs": len(reports), "wall_seconds": wall, "productive_seconds": productive,
               "ettr": productive / wall if wall else None,
               "table5": merge_table5([r["table5"] for r in reports], wall)}
    public = {"overall": overall, "per_job": [{k: v for k, v in r.items() if not k.startswith("_")}
                                              for r in reports]}
    if html_path is not None:
        try:
            html_path.write_text(render_html(public, reports))
        except OSError as e:
            fail(f"--html {html_path}: cannot write: {e.strerror or e}", EXIT_USAGE)
    if json_out:
        print_json(public)
        return
    _print(public, wide)
    if html_path is not None:
        console.print(f"wrote {html_path}", markup=False)


def _check_html_path(path: Path) -> None:
    """Refuse an --html path that cannot be written before any work is done."""
    if path.is_dir():
        fail(f"--html {path}: is a folder; give a file name", EXIT_USAGE)
    folder = path.parent
    if not folder.is_dir():
        fail(f"--html {path}: no folder {folder}", EXIT_USAGE)
    if not os.access(folder, os.W_OK):
        fail(f"--html {path}: folder {folder} is not writable", EXIT_USAGE)


def _print(public: dict[str, Any], wide: bool) -> None:
    for r in public["per_job"]:
        ettr = "-" if r["ettr"] is None else f"{r['ettr']:.1%}"
        console.print(f"[bold]{r['job']}[/bold] ({r['state']}): ETTR {ettr} over {r['wall_seconds']:.0f} s, "
                      f"{r['steps_completed']} steps kept, {r['steps_redone']} redone")
        wall = r["wall_seconds"]
        causes = [(c, s, f"{s / wall:.1%}" if wall else "-") for c, s in r["time_lost_seconds"].items()]
        print_table(console, [[Col("cause", lambda x: x[0]), Col("seconds", lambda x: f"{x[1]:.1f}", right=True),
                               Col("share of wall", lambda x: x[2], right=True)]], causes, wide=wide)
    t5 = public["overall"]["table5"]
    console.print(f"[bold]Unexpected interruptions: {t5['unexpected_interruptions']}[/bold] "
                  f"(planned {t5['planned_interruptions']}, stragglers {t5['stragglers']}, "
                  f"failed checkpoint saves {t5.get('checkpoint_failures', 0)})")
    tail = [Col("count", lambda x: str(x["count"]), right=True),
            Col("share", lambda x: f"{x['share']:.1%}", right=True),
            Col("time lost (s)", lambda x: f"{x['time_lost_seconds']:.1f}", right=True)]
    print_table(console, [
        [Col("category", lambda x: x["category"]), Col("component", lambda x: x["component"]), *tail],
        [Col("category / component", lambda x: f"{x['category']}\n  {x['component']}"), *tail],
    ], t5["categories"], wide=wide)
    if t5["mtbf_seconds"]:
        console.print(f"MTBF {t5['mtbf_seconds'] / 3600:.2f} h")


def _png(fig: Any) -> str:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100, bbox_inches="tight")
    return base64.b64encode(buf.getvalue()).decode()


def _plots(r: dict[str, Any]) -> tuple[str, str]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    start = r["started_at"]
    fig, ax = plt.subplots(figsize=(8, 3))
    series = r["_series"]
    if series:
        ax.plot([(t - start) / 60 for t, _ in series], [e * 100 for _, e in series], color="#2a6")
    if r.get("_target"):
        ax.axhline(r["_target"] * 100, color="#c33", ls="--", lw=1, label="target")
    ax.set_xlabel("minutes since start")
    ax.set_ylabel("ETTR %")
    ax.set_ylim(0, 100)
    ax.set_title(f"{r['job']}: ETTR over time")
    ettr_png = _png(fig)
    plt.close(fig)
    fig, ax = plt.subplots(figsize=(8, 2.5))
    cmap = plt.get_cmap("tab20")
    colors = {c: cmap(i % 20) for i, c in enumerate(CATEGORIES)}
    shown = set()
    for v in r["_views"]:
        a = v.fault_at or v.detected_at
        b = v.resumed_at or v.stopped_at or v.detected_at
        if a is None:
            continue
        width = max((b or a) - a, (r["ended_at"] - start) / 300)
        label = v.category if v.category not in shown else None
        shown.add(v.category)
        ax.broken_barh([((a - start) / 60, width / 60)], (0.6 if v.interrupting else 0.1, 0.3),
                       color=colors.get(v.category, "grey"), label=label)
    ax.set_xlim(0, max(1e-3, (r["ended_at"] - start) / 60))
    ax.set_yticks([0.25, 0.75], ["stragglers, failed saves", "interruptions"])
    ax.set_xlabel("minutes since start")
    ax.set_title("interruption timeline by category")
    if shown:
        ax.legend(loc="upper left", bbox_to_anchor=(1.0, 1.0), fontsize=8)
    timeline_png = _png(fig)
    plt.close(fig)
    return ettr_png, timeline_png


def render_html(public: dict[str, Any], reports: list[dict[str, Any]]) -> str:
    parts = ["<!doctype html><html><head><meta charset='utf-8'><title>Reliability report</title>",
             "<style>body{font-family:sans-serif;margin:2em}table{border-collapse:collapse}"
             "td,th{border:1px solid #ccc;padding:4px 8px;text-align:right}th{background:#eee}</style></head><body>",
             "<h1>Reliability report</h1>"]
    o = public["overall"]
    ettr = "-" if o["ettr"] is None else f"{o['ettr']:.1%}"
    parts.append(f"<p>{o['jobs']} job(s); overall ETTR <b>{ettr}</b></p>")
    for r in reports:
        ettr_png, timeline_png = _plots(r)
        parts.append(f"<h2>{html.escape(r['job'])} ({html.escape(r['state'])})</h2>")
        e = "-" if r["ettr"] is None else f"{r['ettr']:.1%}"
        parts.append(f"<p>ETTR {e} over {r['wall_seconds']:.0f} s</p><table><tr><th>cause</th><th>seconds</th></tr>")
        parts += [f"<tr><td>{c}</td><td>{s:.1f}</td></tr>" for c, s in r["time_lost_seconds"].items()]
        parts.append("</table>")
        parts.append(f"<p><img alt='ETTR over time' src='data:image/png;base64,{ettr_png}'></p>")
        parts.append(f"<p><img alt='interruption timeline' src='data:image/png;base64,{timeline_png}'></p>")
        parts += [f"<img alt='{alt}' src='data:image/png;base64,{png}'>"
                  for alt, png in render_panels(r, r["_rows"], r["_panels"])]
    t5 = o["table5"]
    parts.append("<h2>Root causes (Table 5 view)</h2><table><tr><th>category</th><th>component</th>"
                 "<th>count</th><th>share</th><th>time lost (s)</th></tr>")
    parts += [f"<tr><td>{c['category']}</td><td>{c['component']}</td><td>{c['count']}</td>"
              f"<td>{c['share']:.1%}</td><td>{c['time_lost_seconds']:.1f}</td></tr>" for c in t5["categories"]]
    parts.append("</table></body></html>")
    return "\n".join(parts)
