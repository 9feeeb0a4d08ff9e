"""`orchestrator report` on a million-step metrics.jsonl (a 54-day run at ~4.7 s a step).

Writes the metrics file (rows as the trainer writes them, with restarts that roll
back to the last checkpoint), a catalog holding the job and its interruptions,
and times the real CLI (`report JOB --json`, a fresh process each time, imports
included). The ETTR series alone is timed against the quadratic version it
replaced (kept below as the baseline) at sizes the baseline can finish, in the
same invocation.

    python bench/report_scale.py [--steps 1000000] [--restarts 60] [--repeats 3]
"""

from __future__ import annotations

import argparse
import json
import os
import random
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import median, save  # noqa: E402
from orchestrator.catalog.repository import Catalog  # noqa: E402
from orchestrator.goodput import ettr_series  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
START = 1_750_000_000.0


def ettr_series_quadratic(started_at: float, rows: list[dict[str, Any]]) -> list[tuple[float, float]]:
    """The series as computed before (baseline): a full sum and scan of every kept step per row."""
    out = []
    best: dict[int, float] = {}
    for r in rows:
        best[r["step"]] = r["step_seconds"] - r.get("checkpoint_blocked_seconds", 0.0)
        for s in [s for s in best if s > r["step"]]:
            del best[s]
        elapsed = r["time"] - started_at
        if elapsed > 0:
            out.append((r["time"], sum(best.values()) / elapsed))
    return out


def metrics_rows(steps: int, restarts: int, seed: int = 0) -> list[dict[str, Any]]:
    """`steps` surviving steps; every steps/restarts a restart rolls back up to a checkpoint interval."""
    rng = random.Random(seed)
    rows, step, attempt, t, restarted = [], 0, 1, START + 60.0, 0
    every = steps // max(1, restarts)
    while step < steps:
        if step and step % every == 0 and step > restarted:
            restarted = step
            attempt += 1
            step -= rng.randint(1, 500)  # lost since the last checkpoint
            t += 120.0  # detection and restart
        step += 1
        dt = rng.uniform(4.5, 5.0)
        t += dt
        rows.append({"step": step, "loss": 2.0 + 1.0 / step, "tokens": 16_777_216, "step_seconds": dt,
                     "attempt": attempt, "time": t, "lr": 3e-4, "grad_norm": 0.9,
                     "tokens_per_second": 16_777_216 / dt, "checkpoint_blocked_seconds": 0.0})
    return rows


def write_world(root: Path, steps: int, restarts: int) -> tuple[str, str, int]:
    rows = metrics_rows(steps, restarts)
    run = root / "runs" / "long"
    run.mkdir(parents=True)
    with open(run / "metrics.jsonl", "w") as f:
        for r in rows:
            f.write(json.dumps(r) + "\n")
    url = f"sqlite:///{root / 'catalog.db'}"
    cat = Catalog(url)
    cat.create_job("long", {"name": "long"}, world_size=16_384, steps_total=steps, run_dir=str(run),
                   ray_address=None)
    started = datetime.fromtimestamp(START, UTC)
    cat.update_job("long", state="succeeded", last_step=steps, started_at=started,
                   ended_at=datetime.fromtimestamp(rows[-1]["time"] + 10, UTC))
    for n in range(restarts):
        at = started + timedelta(days=n * 0.9)
        cat.record_interruption(job_name="long", attempt=n + 1, planned=False, category="faulty_gpu",
                                component="gpu", confidence=0.9, kind="crash", explanation="Xid 79",
                                ranks=[n], hosts=[f"host-{n}"], fault_at=at, detected_at=at + timedelta(seconds=20),
                                resumed_at=at + timedelta(seconds=120), steps_lost=250)
    cat.close()
    return url, str(run / "metrics.jsonl"), len(rows)


def time_cli(url: str, root: Path, args: list[str]) -> tuple[float, str]:
    env = {**os.environ, "ORCHESTRATOR_DB": url, "ORCHESTRATOR_HOME": str(root), "PYTHONPATH": str(ROOT)}
    t0 = time.perf_counter()
    p = subprocess.run([sys.executable, "-m", "orchestrator.cli.main", *args], env=env, capture_output=True,
                       text=True, check=True)
    return time.perf_counter() - t0, p.stdout


def time_series(fn: Any, rows: list[dict[str, Any]], repeats: int) -> float:
    ts = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn(START, rows)
        ts.append(time.perf_counter() - t0)
    return median(ts)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--steps", type=int, default=1_000_000)
    ap.add_argument("--restarts", type=int, default=60)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--baseline-steps", type=int, nargs="+", default=[5_000, 10_000, 20_000])
    args = ap.parse_args()
    series = []
    for n in args.baseline_steps:
        rows = metrics_rows(n, max(1, args.restarts * n // args.steps))
        old = time_series(ettr_series_quadratic, rows, args.repeats)
        new = time_series(ettr_series, rows, args.repeats)
        assert ettr_series(START, rows) == ettr_series_quadratic(START, rows) or all(
            abs(a[1] - b[1]) < 1e-9 for a, b in zip(ettr_series(START, rows), ettr_series_quadratic(START, rows),
                                                    strict=True))
        series.append({"rows": len(rows), "quadratic_s": old, "linear_s": new, "speedup": old / new})
        print(f"ettr_series over {len(rows):,} rows: before {old:.3f} s, after {new:.4f} s ({old / new:.0f}x)")
    with tempfile.TemporaryDirectory(prefix="report-scale-") as tmp:
        root = Path(tmp)
        t0 = time.perf_counter()
        url, path, n_rows = write_world(root, args.steps, args.restarts)
        gen_s = time.perf_counter() - t0
        size_mb = Path(path).stat().st_size / 2**20
        print(f"wrote {n_rows:,} rows ({size_mb:.0f} MiB) in {gen_s:.1f} s")
        runs = []
        out = ""
        for _ in range(args.repeats):
            s, out = time_cli(url, root, ["report", "long", "--json"])
            runs.append(s)
        job = json.loads(out)["per_job"][0]
        big_rows = metrics_rows(args.steps, args.restarts)
        t0 = time.perf_counter()
        ettr_series(START, big_rows)
        series_big = time.perf_counter() - t0
        imports, _ = time_cli(url, root, ["report", "--help"])
    result = {"load_average_at_end": os.getloadavg(), "steps": args.steps, "rows": n_rows, "metrics_mib": size_mb,
              "restarts": args.restarts,
              "report_json_seconds": runs, "report_json_median_s": median(runs), "cli_help_seconds": imports,
              "ettr_series_seconds_at_steps": series_big, "steps_completed": job["steps_completed"],
              "steps_redone": job["steps_redone"], "ettr": job["ettr"], "ettr_series_vs_baseline": series}
    listed = ", ".join(f"{x:.1f}" for x in runs)
    print(f"report --json over {n_rows:,} rows: median {median(runs):.1f} s (runs {listed});"
          f" ettr_series alone {series_big:.2f} s; CLI start-up {imports:.1f} s")
    print(f"saved {save('report_scale', result)}")


if __name__ == "__main__":
    main()
