"""How long the 54-day, 16,384-GPU simulation takes on one core, and where the time goes.

`python bench/sim_speed.py --repeats 3`: runs examples/sim/llama3-405b.yaml
(seed 0) in each mode, alternating, and reports the median CPU time of the
process (one core: the simulation is single-threaded) and wall time:

- memory: interruptions kept in memory, no catalog (the default `orchestrator sim`);
- catalog-batched: the real CatalogWriter on in-memory SQLite, writes sharing one transaction per 500 events
  (what `--db`/`--state-dir` use);
- catalog-per-event: the same with one transaction per event, as the controller writes in production;
- state-dir: catalog-batched on a SQLite file plus every step's metrics.jsonl row (`--state-dir`).

The memory run also splits its CPU time between the production calls it makes
(scaling policy, failure policy, classifier, detectors) and the rest.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import median, save  # noqa: E402
from orchestrator.catalog.repository import Catalog  # noqa: E402
from orchestrator.sim import engine  # noqa: E402
from orchestrator.sim.batched import BatchedCatalog  # noqa: E402
from orchestrator.sim.run import simulate  # noqa: E402
from orchestrator.sim.scenario import load_scenario  # noqa: E402

SCENARIO = Path(__file__).resolve().parents[1] / "examples" / "sim" / "llama3-405b.yaml"


def timed(fn: Callable[[], Any]) -> tuple[float, float, Any]:
    c, w = time.process_time(), time.perf_counter()
    out = fn()
    return time.process_time() - c, time.perf_counter() - w, out


def run_mode(mode: str, sc: Any, seed: int) -> tuple[float, float, dict[str, Any]]:
    tmp = Path(tempfile.mkdtemp(prefix="simbench-"))
    try:
        if mode == "memory":
            return timed(lambda: simulate(sc, seed))
        if mode == "catalog-batched":
            cat: Catalog = BatchedCatalog("sqlite://", events_per_commit=500)
        elif mode == "catalog-per-event":
            cat = Catalog("sqlite://")
        else:
            cat = BatchedCatalog(f"sqlite:///{tmp / 'catalog.db'}", events_per_commit=500)

        def go() -> dict[str, Any]:
            out = simulate(sc, seed, catalog=cat, run_dir=tmp / "run" if mode == "state-dir" else None)
            cat.close()
            return out

        return timed(go)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def breakdown(sc: Any, seed: int) -> dict[str, float]:
    """CPU seconds inside each production call the simulation makes (memory mode, one run)."""
    spent: dict[str, float] = defaultdict(float)
    calls: dict[str, int] = defaultdict(int)
    targets = {"scaling_policy.decide": (engine.scaling_policy, "decide"),
               "failure_policy.decide": (engine.failure_policy, "decide"),
               "classify_evidence": (engine, "classify_evidence"), "gather_evidence": (engine, "gather_evidence"),
               "interruption_record": (engine, "interruption_record"), "detect_crash": (engine, "detect_crash"),
               "detect_hang": (engine, "detect_hang"), "first_cause": (engine, "first_cause")}
    saved = {}
    for name, (mod, attr) in targets.items():
        fn = getattr(mod, attr)
        saved[name] = fn

        def wrap(*a: Any, _fn: Any = fn, _name: str = name, **k: Any) -> Any:
            t = time.process_time()
            try:
                return _fn(*a, **k)
            finally:
                spent[_name] += time.process_time() - t
                calls[_name] += 1

        setattr(mod, attr, wrap)
    try:
        total, _, _ = timed(lambda: simulate(sc, seed))
    finally:
        for name, (mod, attr) in targets.items():
            setattr(mod, attr, saved[name])
    return {"total_cpu_s": total, **{f"{k}_cpu_s": v for k, v in spent.items()},
            **{f"{k}_calls": float(v) for k, v in calls.items()},
            "rest_cpu_s": total - sum(spent.values())}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--modes", default="memory,catalog-batched,catalog-per-event,state-dir")
    args = ap.parse_args()
    sc = load_scenario(SCENARIO)
    modes = args.modes.split(",")
    runs: dict[str, list[dict[str, float]]] = {m: [] for m in modes}
    for i in range(args.repeats):
        for m in modes:
            cpu, wall, out = run_mode(m, sc, args.seed)
            runs[m].append({"cpu_s": cpu, "wall_s": wall, "interruptions": out["unexpected_interruptions"]
                            + out["planned_interruptions"]})
            print(f"run {i + 1} {m}: cpu {cpu:.2f} s, wall {wall:.2f} s", flush=True)
    summary = {m: {"median_cpu_s": median([r["cpu_s"] for r in rs]), "median_wall_s": median([r["wall_s"] for r in rs])}
               for m, rs in runs.items()}
    base = summary[modes[0]]["median_cpu_s"]
    for m in modes:
        summary[m]["cpu_ratio_to_" + modes[0]] = summary[m]["median_cpu_s"] / base
    split = breakdown(sc, args.seed)
    for k, v in split.items():
        print(f"  {k}: {v:.3f}")
    print(summary)
    path = save("sim_speed", {"scenario": str(SCENARIO.name), "seed": args.seed, "runs": runs, "summary": summary,
                              "breakdown": split,
                              "load_average": list(Path("/proc/loadavg").read_text().split()[:3])})
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
