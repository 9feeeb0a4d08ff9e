"""`orchestrator sim`: the cluster simulation, one run or a sweep."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table

from orchestrator.catalog.db import CatalogError
from orchestrator.cli.common import EXIT_USAGE, DbOpt, JsonOpt, StateDirOpt, console, err_console, fail, print_json
from orchestrator.paths import db_url, state_dir
from orchestrator.sim.scenario import ScenarioError, load_scenario


def sim(
    scenario: Annotated[Path, typer.Argument(help="Scenario file (see examples/sim/)")],
    seed: Annotated[int, typer.Option("--seed", help="Random seed")] = 0,
    sweep_opt: Annotated[bool, typer.Option("--sweep", help="Sweep the scenario's `sweep` settings")] = False,
    html_path: Annotated[Path | None, typer.Option("--html", help="Write the sweep's plots to this HTML file")] = None,
    db: DbOpt = None, state_dir_opt: StateDirOpt = None, json_out: JsonOpt = False,
) -> None:
    """Simulate one job on thousands of GPUs through the production policies, classifier and catalog.

    Nothing is written without --db or --state-dir; with either, `orchestrator report` reads the run.
    """
    try:
        sc = load_scenario(scenario)
    except ScenarioError as e:
        fail(str(e), EXIT_USAGE)
    if sweep_opt:
        _sweep(sc, seed, html_path, json_out)
        return
    if html_path is not None:
        fail("--html goes with --sweep", EXIT_USAGE)
    from orchestrator.sim.engine import SimulationError
    from orchestrator.sim.run import job_name, simulate

    catalog = None
    run_dir = None
    if db is not None or state_dir_opt is not None:
        from orchestrator.sim.batched import BatchedCatalog

        sd = state_dir(state_dir_opt)
        try:
            catalog = BatchedCatalog(db_url(sd, db))
        except CatalogError as e:
            fail(str(e))
        run_dir = sd / "runs" / job_name(sc, seed)
    try:
        out = simulate(sc, seed, catalog=catalog, run_dir=run_dir)
    except (SimulationError, CatalogError) as e:
        if catalog is not None:
            catalog.rollback()  # nothing half-written: the run's rows go or stay together
        if run_dir is not None:
            shutil.rmtree(run_dir, ignore_errors=True)
        fail(str(e))
    finally:
        if catalog is not None:
            catalog.close()
    if json_out:
        print_json(out)
        return
    _print(out)
    if catalog is not None:
        console.print(f"recorded as job {job_name(sc, seed)} in {catalog.url}")


def _sweep(sc: Any, seed: int, html_path: Path | None, json_out: bool) -> None:
    from orchestrator.sim.sweep import render_html, sweep

    if not any([sc.sweep.checkpoint_interval_minutes, sc.sweep.restart_seconds, sc.sweep.detection_seconds,
                sc.sweep.spares, sc.sweep.in_memory_interval_steps]):
        fail(f"scenario {sc.name!r} has no `sweep` settings to sweep", EXIT_USAGE)
    res = sweep(sc, seed, progress=None if json_out else lambda s: err_console.print(f"  {s}", highlight=False))
    path = html_path or Path(f"{sc.name}-sweep.html")
    path.write_text(render_html(res))
    if json_out:
        print_json({**res, "html": str(path)})
        return
    t = Table("checkpoint min", "restart s", "snapshot steps", "ETTR", "analytic",
              title=f"Settings reaching ETTR >= {res['target_ettr']:.0%} ({res['days']:g} days per run)")
    for g in sorted(res["reaching_target"], key=lambda g: -g["ettr"]):
        s = g["settings"]
        t.add_row(f"{s['checkpoint_interval_minutes']:g}", f"{s['restart_seconds']:g}",
                  f"{s['in_memory_interval_steps']:g}", f"{g['ettr']:.2%}", f"{g['ettr_analytic_with_planned']:.2%}")
    console.print(t)
    console.print(f"wrote {path}")


def _print(o: dict[str, Any]) -> None:
    console.print(f"[bold]{o['scenario']}[/bold] (seed {o['seed']}): {o['gpus']:,} GPUs on {o['hosts']:,} hosts for "
                  f"{o['days']:g} days: {o['unexpected_interruptions']} unexpected interruptions "
                  f"(expected {o['expected_unexpected_interruptions']:.0f}), {o['planned_interruptions']} planned")
    console.print(f"ETTR {o['ettr']:.2%} simulated, {o['ettr_analytic']:.2%} analytic "
                  f"({o['ettr_analytic_with_planned']:.2%} with planned downtime); steps done "
                  f"{o['work_ratio']:.2%} of an uninterrupted full-size run")
    t = Table("component", "category", "count", "share", "Table 5", "share", "time lost (h)",
              title="Unexpected interruptions (Llama 3 Table 5 layout)")
    for r in o["categories"]:
        t.add_row(r["component"], r["category"], str(r["count"]), f"{r['share']:.1%}", str(r["reference_count"]),
                  f"{r['reference_share']:.1%}", f"{r['time_lost_seconds'] / 3600:.1f}")
    console.print(t)
    t = Table("cause", "hours", "share of wall")
    for cause, s in o["time_lost_seconds"].items():
        t.add_row(cause, f"{s / 3600:.1f}", f"{s / o['wall_seconds']:.2%}")
    console.print(t)
    console.print(f"misclassified {o['misclassified']}, cordons {o['cordons']} (lemons {o['lemons_cordoned']}, named "
                  f"{o['lemon_listings']} times), "
                  f"hosts swapped in {o['hosts_swapped_in']}, smallest dp {o['min_dp']}, "
                  f"jobs failed by the policy and resubmitted {o['manual_interventions']}")
    for reason in o["failure_reasons"][:5]:
        console.print(f"  failed: {reason}", highlight=False)
