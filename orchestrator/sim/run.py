"""One simulated run turned into `orchestrator sim`'s JSON: counts, ETTR, time lost, Table 5, analytic E[ETTR]."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from orchestrator.catalog.repository import Catalog
from orchestrator.goodput import table5
from orchestrator.sim.analytic import analytic
from orchestrator.sim.engine import SimResult, Simulation
from orchestrator.sim.scenario import Scenario
from orchestrator.taxonomy import COMPONENT_OF


def job_name(sc: Scenario, seed: int) -> str:
    return f"sim-{sc.name}-s{seed}"[:63]


def simulate(sc: Scenario, seed: int = 0, *, catalog: Catalog | None = None,
             run_dir: Path | None = None) -> dict[str, Any]:
    """Run `sc` once; with a catalog, everything is recorded there too (and metrics.jsonl in `run_dir`)."""
    t0 = time.perf_counter()
    sim = Simulation(sc, seed, catalog=catalog, job=job_name(sc, seed), run_dir=run_dir)
    r = sim.run()
    out = result_dict(sc, r, table5(sim.records.views(), [{"step_seconds": sc.job.step_seconds}], r.wall_seconds))
    out["runtime_seconds"] = time.perf_counter() - t0
    return out


def result_dict(sc: Scenario, r: SimResult, t5: dict[str, Any]) -> dict[str, Any]:
    ref = {k: n for k, n in sc.failures.counts.items() if n}
    ref_total = sum(ref.values())
    scale = sc.job.days * sc.cluster.hosts / (sc.failures.over_days * sc.failures.on_hosts) * sc.failures.rate_scale
    rows = []
    got = {row["category"]: row for row in t5["categories"]}
    for c in sorted(set(ref) | set(got), key=lambda c: (-ref.get(c, 0), -got.get(c, {}).get("count", 0), c)):
        g = got.get(c, {})
        rows.append({"category": c, "component": COMPONENT_OF[c], "count": g.get("count", 0),
                     "share": g.get("share", 0.0), "time_lost_seconds": g.get("time_lost_seconds", 0.0),
                     "injected": r.truth.get(c, 0), "reference_count": ref.get(c, 0),
                     "reference_share": ref.get(c, 0) / ref_total, "expected_count": ref.get(c, 0) * scale})
    return {
        "scenario": sc.name, "seed": r.seed, "hosts": r.hosts, "gpus": r.gpus, "days": r.days,
        "unexpected_interruptions": r.unexpected_interruptions,
        "planned_interruptions": r.planned_interruptions,
        "expected_unexpected_interruptions": ref_total * scale,
        "ettr": r.ettr, "work_ratio": r.work_ratio, **analytic(sc),
        "wall_seconds": r.wall_seconds, "productive_seconds": r.productive_seconds,
        "time_lost_seconds": r.time_lost_seconds,
        "table5": t5, "categories": rows,
        "misclassified": r.misclassified, "manual_interventions": r.manual_interventions,
        "failure_reasons": r.failure_reasons, "cordons": r.cordons, "lemons_cordoned": r.lemons_cordoned,
        "lemon_listings": r.lemon_listings,
        "hosts_swapped_in": r.spares_swapped, "scaling": r.scaling, "min_dp": r.min_dp,
        "attempts": r.attempts, "steps": r.steps,
    }
