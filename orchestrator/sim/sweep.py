"""`orchestrator sim --sweep`: which recovery and checkpoint settings reach the ETTR target.

One parameter at a time around the scenario (checkpoint interval, restart
time, detection latency, spares, in-memory snapshots), then every combination
of checkpoint interval, restart time and snapshot interval, each a full
simulated run next to the analytic E[ETTR]. The HTML report plots the curves.
"""

from __future__ import annotations

import base64
import html
import io
import itertools
from collections.abc import Callable
from typing import Any

from orchestrator.sim.run import simulate
from orchestrator.sim.scenario import DETECTION_KINDS, Scenario

PARAMS = ("checkpoint_interval_minutes", "restart_seconds", "detection_seconds", "spares", "in_memory_interval_steps")
GRID = ("checkpoint_interval_minutes", "restart_seconds", "in_memory_interval_steps")


def with_setting(sc: Scenario, param: str, value: float) -> Scenario:
    """`sc` with one swept parameter changed."""
    if param == "checkpoint_interval_minutes":
        return sc.model_copy(update={"checkpoint": sc.checkpoint.model_copy(update={"interval_minutes": value})})
    if param == "in_memory_interval_steps":
        return sc.model_copy(update={"checkpoint": sc.checkpoint.model_copy(
            update={"in_memory_interval_steps": int(value)})})
    if param == "restart_seconds":
        return sc.model_copy(update={"recovery": sc.recovery.model_copy(update={"restart_seconds": value})})
    if param == "detection_seconds":
        det = {k: (sc.recovery.detection_seconds[k] if k == "sdc" else value) for k in DETECTION_KINDS}
        return sc.model_copy(update={"recovery": sc.recovery.model_copy(update={"detection_seconds": det})})
    if param == "spares":
        return sc.model_copy(update={"cluster": sc.cluster.model_copy(update={"spares": int(value)})})
    raise ValueError(f"unknown sweep parameter {param!r}")


def base_value(sc: Scenario, param: str) -> float:
    return {"checkpoint_interval_minutes": sc.checkpoint.interval_minutes,
            "restart_seconds": sc.recovery.restart_seconds,
            "detection_seconds": sc.recovery.detection_seconds["hang"], "spares": sc.cluster.spares,
            "in_memory_interval_steps": sc.checkpoint.in_memory_interval_steps}[param]


def _point(sc: Scenario, seed: int, settings: dict[str, float]) -> dict[str, Any]:
    r = simulate(sc, seed)
    return {"settings": settings, "ettr": r["ettr"], "work_ratio": r["work_ratio"], "ettr_analytic": r["ettr_analytic"],
            "ettr_analytic_with_planned": r["ettr_analytic_with_planned"],
            "unexpected_interruptions": r["unexpected_interruptions"], "time_lost_seconds": r["time_lost_seconds"],
            "manual_interventions": r["manual_interventions"], "min_dp": r["min_dp"]}


def sweep(sc: Scenario, seed: int = 0, progress: Callable[[str], None] | None = None) -> dict[str, Any]:
    sw = sc.sweep
    if sw.days is not None:
        sc = sc.model_copy(update={"job": sc.job.model_copy(update={"days": sw.days})})
    base = {p: base_value(sc, p) for p in PARAMS}
    curves: dict[str, list[dict[str, Any]]] = {}
    for p in PARAMS:
        for v in getattr(sw, p):
            if progress:
                progress(f"{p}={v:g}")
            curves.setdefault(p, []).append({"value": v, **_point(with_setting(sc, p, v), seed, {**base, p: v})})
    grid = []
    axes = [getattr(sw, p) or [base[p]] for p in GRID]
    if any(getattr(sw, p) for p in GRID):
        for values in itertools.product(*axes):
            g = sc
            for p, v in zip(GRID, values, strict=True):
                g = with_setting(g, p, v)
            if progress:
                progress(", ".join(f"{p}={v:g}" for p, v in zip(GRID, values, strict=True)))
            grid.append(_point(g, seed, {**base, **dict(zip(GRID, values, strict=True))}))
    reach = [g for g in grid if g["ettr"] >= sw.target_ettr]
    return {"scenario": sc.name, "seed": seed, "days": sc.job.days, "target_ettr": sw.target_ettr, "base": base,
            "curves": curves, "grid": grid, "reaching_target": reach}


def _png(fig: Any) -> str:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=90, bbox_inches="tight")
    return base64.b64encode(buf.getvalue()).decode()


def render_html(res: dict[str, Any]) -> str:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    curves = res["curves"]
    target = res["target_ettr"]
    parts = ["<!doctype html><html><head><meta charset='utf-8'><title>ETTR sweep</title>",
             "<style>body{font-family:sans-serif;margin:2em}table{border-collapse:collapse}"
             "td,th{border:1px solid #ccc;padding:3px 8px;text-align:right}th{background:#eee}</style></head><body>",
             f"<h1>ETTR sweep: {html.escape(res['scenario'])}</h1>",
             f"<p>{res['days']:g} simulated days per point, seed {res['seed']}; target ETTR {target:.0%}. "
             "Each point is a full simulated run through the production policies; the dashed line is the "
             "analytic E[ETTR] (Kokolis et al.) for the same parameters. ETTR counts time: a job whose "
             "data parallelism was shrunk trains all the time at a fraction of its speed, so where dp shrank the "
             "dotted line shows the steps done against an uninterrupted full-size run.</p>"]
    if curves:
        fig, axes = plt.subplots(1, len(curves), figsize=(4.2 * len(curves), 3.4), squeeze=False)
        for ax, (p, pts) in zip(axes[0], curves.items(), strict=True):
            xs = [pt["value"] for pt in pts]
            ax.plot(xs, [pt["ettr"] * 100 for pt in pts], "o-", label="simulated")
            ax.plot(xs, [pt["ettr_analytic_with_planned"] * 100 for pt in pts], "--", label="analytic")
            if any(pt["work_ratio"] < pt["ettr"] - 1e-9 for pt in pts):
                ax.plot(xs, [pt["work_ratio"] * 100 for pt in pts], ":", label="steps done (shrunk dp counted)")
                ax.legend(fontsize=7)
            ax.axhline(target * 100, color="red", lw=0.8)
            if min(xs) > 0 and max(xs) / max(min(xs), 1e-9) > 20:
                ax.set_xscale("log")
            ax.set_xlabel(p.replace("_", " "))
            ax.set_ylabel("ETTR %")
            ax.grid(alpha=0.3)
        axes[0][0].legend(fontsize=8)
        parts.append(f"<p><img alt='one parameter at a time' src='data:image/png;base64,{_png(fig)}'></p>")
        plt.close(fig)
    grid = res["grid"]
    if grid:
        snaps = sorted({g["settings"]["in_memory_interval_steps"] for g in grid})
        fig, axes = plt.subplots(1, len(snaps), figsize=(4.5 * len(snaps), 3.6), squeeze=False)
        for ax, s in zip(axes[0], snaps, strict=True):
            for rs in sorted({g["settings"]["restart_seconds"] for g in grid}):
                pts = sorted((g["settings"]["checkpoint_interval_minutes"], g["ettr"]) for g in grid
                             if g["settings"]["in_memory_interval_steps"] == s and
                             g["settings"]["restart_seconds"] == rs)
                ax.plot([x for x, _ in pts], [y * 100 for _, y in pts], "o-", label=f"restart {rs:g} s")
            ax.axhline(target * 100, color="red", lw=0.8)
            ax.set_title("no snapshots" if not s else f"snapshots every {s:g} steps")
            ax.set_xlabel("checkpoint interval (min)")
            ax.set_ylabel("simulated ETTR %")
            ax.grid(alpha=0.3)
        axes[0][0].legend(fontsize=8)
        parts.append(f"<h2>Combinations</h2><p><img alt='grid' src='data:image/png;base64,{_png(fig)}'></p>")
        plt.close(fig)
        parts.append("<table><tr><th>checkpoint min</th><th>restart s</th><th>snapshot steps</th>"
                     "<th>ETTR</th><th>analytic</th></tr>")
        for g in sorted(grid, key=lambda g: -g["ettr"]):
            st = g["settings"]
            mark = " style='background:#dfd'" if g["ettr"] >= target else ""
            parts.append(f"<tr{mark}><td>{st['checkpoint_interval_minutes']:g}</td><td>{st['restart_seconds']:g}</td>"
                         f"<td>{st['in_memory_interval_steps']:g}</td><td>{g['ettr']:.2%}</td>"
                         f"<td>{g['ettr_analytic_with_planned']:.2%}</td></tr>")
        parts.append("</table>")
    parts.append("</body></html>")
    return "\n".join(parts)
