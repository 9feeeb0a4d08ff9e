"""What the catalog costs the controller at 16,384 ranks on 2,048 hosts, on SQLite and PostgreSQL.

Records one attempt (placement, start, a step's per-rank progress, end) and one
interruption that cordons 8 hosts, through the controller's catalog writer (one
transaction per event), and the same placement and end the way the controller
wrote them before (one transaction per rank) as the baseline, in the same
invocation. Counts the SQL statements the database saw and the seconds.

    python bench/catalog_scale.py [--ranks 16384] [--hosts 2048] [--repeats 3]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from sqlalchemy import event

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import median, save  # noqa: E402
from orchestrator.catalog.repository import Catalog  # noqa: E402
from orchestrator.controller.callbacks import HostAction, InterruptionRecord, RankEnd, RankPlacement  # noqa: E402
from orchestrator.controller.catalog_writer import CatalogWriter  # noqa: E402
from orchestrator.controller.monitor import Progress  # noqa: E402


class Clock:
    def __init__(self) -> None:
        self.t = 1_700_000_000.0

    def time(self) -> float:
        self.t += 0.001
        return self.t

    def sleep(self, s: float) -> None:
        self.t += s


def counting(cat: Catalog) -> list[int]:
    n = [0]

    @event.listens_for(cat.engine, "before_cursor_execute")
    def _count(*_: Any) -> None:
        n[0] += 1

    return n


def batched(cat: Catalog, job: str, ranks: int, hosts: int) -> dict[str, Any]:
    clock = Clock()
    w = CatalogWriter(cat, job, clock)
    n = counting(cat)
    per = ranks // hosts
    placements = [RankPlacement(r, f"host-{r // per:05d}", f"node-{r // per:05d}", f"10.{r // per // 250}.0.1")
                  for r in range(ranks)]
    out: dict[str, Any] = {}

    def phase(name: str, fn: Any) -> None:
        n[0] = 0
        t0 = time.perf_counter()
        fn()
        out[name] = {"seconds": time.perf_counter() - t0, "statements": n[0]}

    phase("attempt_started", lambda: w.attempt_started(1, 0, {"dp": ranks}))
    phase("ranks_placed", lambda: w.ranks_placed(1, placements))
    phase("ranks_started", lambda: w.ranks_started(1, {r: 10_000 + r for r in range(ranks)},
                                                   {r: f"/logs/rank-{r:05d}.log" for r in range(ranks)}))
    phase("progressed", lambda: w.progressed(1, Progress(100, 2.0, 1e6, {r: 100 for r in range(ranks)}, True),
                                             clock.time()))
    phase("attempt_ended", lambda: w.attempt_ended(1, "failed", "rank 3 exited with SIGKILL",
                                                   [RankEnd(r, -9 if r == 3 else 1, "SIGKILL" if r == 3 else None,
                                                            clock.time()) for r in range(0, ranks, 97)],
                                                   clock.time()))
    bad = [f"host-{h:05d}" for h in range(0, 8 * 97, 97)]
    phase("interrupted_8_hosts", lambda: w.interrupted(InterruptionRecord(
        job=job, attempt=1, planned=False, kind="node_lost", category="network_switch_cable",
        component="network", confidence=0.9, explanation="8 hosts lost their leaf switch", decision="cordon",
        ranks=tuple(range(8)), hosts=tuple(bad), fault_at=clock.time(), detected_at=clock.time(),
        stopped_at=clock.time(), step_at_fault=100, resume_step=90, steps_lost=10,
        host_actions=tuple(HostAction(h, "cordoned", "switch") for h in bad))))
    return out


def per_rank(cat: Catalog, job: str, ranks: int, hosts: int) -> dict[str, Any]:
    """The earlier controller's writes: a transaction per rank at placement and at the end."""
    n = counting(cat)
    aid = cat.start_attempt(job, 1, 0, {"dp": ranks})
    per = ranks // hosts
    out: dict[str, Any] = {}
    n[0] = 0
    t0 = time.perf_counter()
    for r in range(ranks):
        cat.see_host(f"host-{r // per:05d}", f"node-{r // per:05d}", "10.0.0.1")
        cat.upsert_rank(aid, r, host=f"host-{r // per:05d}", node_id=f"node-{r // per:05d}", state="placed")
    out["ranks_placed"] = {"seconds": time.perf_counter() - t0, "statements": n[0]}
    n[0] = 0
    t0 = time.perf_counter()
    for r in range(ranks):
        cat.upsert_rank(aid, r, state="stopped")
    out["attempt_ended"] = {"seconds": time.perf_counter() - t0, "statements": n[0]}
    return out


def fresh(url_factory: Any, name: str, ranks: int) -> Catalog:
    cat = Catalog(url_factory(name))
    cat.create_job(name, {}, ranks, 1000, "/tmp/run", None)
    return cat


def run(backend: str, url_factory: Any, ranks: int, hosts: int, repeats: int, baseline_ranks: int) -> dict[str, Any]:
    runs, base = [], []
    for i in range(repeats):
        cat = fresh(url_factory, f"b{i}", ranks)
        runs.append(batched(cat, f"b{i}", ranks, hosts))
        cat.close()
        cat = fresh(url_factory, f"p{i}", baseline_ranks)
        base.append(per_rank(cat, f"p{i}", baseline_ranks, max(1, baseline_ranks * hosts // ranks)))
        cat.close()
    summary = {ph: {"seconds": median([r[ph]["seconds"] for r in runs]), "statements": runs[0][ph]["statements"]}
               for ph in runs[0]}
    scale = ranks / baseline_ranks
    bsum = {ph: {"seconds": median([r[ph]["seconds"] for r in base]) * scale,
                 "statements": int(base[0][ph]["statements"] * scale)} for ph in base[0]}
    return {"backend": backend, "batched": summary, "per_rank_baseline_extrapolated": bsum,
            "baseline_measured_ranks": baseline_ranks, "raw": {"batched": runs, "per_rank": base}}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--ranks", type=int, default=16384)
    ap.add_argument("--hosts", type=int, default=2048)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--baseline-ranks", type=int, default=1024,
                    help="the per-rank baseline is measured on this many ranks and scaled linearly")
    args = ap.parse_args()
    results = []
    with tempfile.TemporaryDirectory() as d:
        results.append(run("sqlite", lambda name: f"sqlite:///{d}/{name}.db", args.ranks, args.hosts, args.repeats,
                           args.baseline_ranks))
    try:
        from tests.services import create_database, postgres_server

        with postgres_server() as admin:
            results.append(run("postgresql", lambda name: create_database(admin, f"bench_{name}"), args.ranks,
                               args.hosts, args.repeats, args.baseline_ranks))
    except (RuntimeError, OSError) as e:
        print(f"PostgreSQL skipped: {e}", file=sys.stderr)
    for r in results:
        print(r["backend"])
        for ph, v in r["batched"].items():
            b = r["per_rank_baseline_extrapolated"].get(ph)
            extra = f"   (per-rank writes: {b['seconds']:.1f} s, {b['statements']} statements)" if b else ""
            print(f"  {ph:22s} {v['seconds']:7.3f} s {v['statements']:6d} statements{extra}")
    path = save("catalog_scale", {"ranks": args.ranks, "hosts": args.hosts, "repeats": args.repeats,
                                  "results": results})
    print(f"raw results: {path}")


if __name__ == "__main__":
    main()
