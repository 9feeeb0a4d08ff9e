"""The metrics exporter at 16,384 ranks: payload and scrape time, against one series per rank.

    python bench/metrics_exporter.py [--ranks 16384] [--ranks-per-host 8] [--scrapes 30] [--rows 20000]

The exporter is fed what the controller feeds it for a 16,384-rank job
(placements on 2,048 hosts, per-step progress with every rank's step time, a
few checkpoints and interruptions in a real SQLite catalog, a metrics.jsonl of
`--rows` steps) and scraped over HTTP on loopback like Prometheus does. The
baseline, in the same invocation, is the naive exporter: one
`orchestrator_rank_step_seconds{rank}` series per rank, served the same way.
Also timed: the `progressed` hook (the controller thread's cost per step) and
the catalog refresh (goodput.py over the catalog and metrics.jsonl).
Figures are medians over `--scrapes` scrapes.
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import tempfile
import time
import urllib.request
from datetime import UTC, datetime
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from prometheus_client import CollectorRegistry, Gauge  # noqa: E402

from bench.common import median, save  # noqa: E402
from orchestrator.catalog.repository import Catalog  # noqa: E402
from orchestrator.controller.callbacks import RankPlacement  # noqa: E402
from orchestrator.controller.monitor import Progress  # noqa: E402
from orchestrator.metrics.exporter import MetricsExporter  # noqa: E402


class Clock:
    def time(self) -> float:
        return time.time()


def scrape(url: str, n: int) -> tuple[int, float, int]:
    """(bytes, median seconds, series lines) of `n` scrapes."""
    times, size, lines = [], 0, 0
    for _ in range(n):
        t = time.perf_counter()
        body = urllib.request.urlopen(url, timeout=60).read()
        times.append(time.perf_counter() - t)
        size = len(body)
        lines = sum(1 for ln in body.splitlines() if ln and not ln.startswith(b"#"))
    return size, median(times), lines


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--ranks", type=int, default=16384)
    ap.add_argument("--ranks-per-host", type=int, default=8)
    ap.add_argument("--top-ranks", type=int, default=16)
    ap.add_argument("--scrapes", type=int, default=30)
    ap.add_argument("--rows", type=int, default=20000)
    a = ap.parse_args()
    rng = random.Random(7)
    with tempfile.TemporaryDirectory() as tmp:
        run = Path(tmp)
        cat = Catalog(f"sqlite:///{run / 'catalog.db'}")
        cat.create_job("big", {"name": "big"}, a.ranks, 10**6, str(run), None)
        t0 = time.time() - a.rows * 1.0 - 60
        cat.update_job("big", started_at=datetime.fromtimestamp(t0, UTC))
        with (run / "metrics.jsonl").open("w") as f:
            for s in range(1, a.rows + 1):
                f.write(json.dumps({"step": s, "loss": 2.0, "tokens": 4096, "step_seconds": 0.95, "attempt": 1,
                                    "time": t0 + 30 + s, "checkpoint_blocked_seconds": 0.0}) + "\n")
        hosts = {r: f"node-{r // a.ranks_per_host:05d}" for r in range(a.ranks)}
        for h in sorted(set(hosts.values()))[:3]:
            cat.see_host(h, None, None)
        for k in range(5):
            cat.record_interruption(job_name="big", attempt=1, planned=False, category="faulty_gpu",
                                    component="gpu", confidence=0.9, kind="crash", explanation="x", ranks=[k],
                                    hosts=[hosts[k]], evidence={}, fault_at=datetime.fromtimestamp(t0 + k, UTC),
                                    detected_at=datetime.fromtimestamp(t0 + k + 2, UTC), step_at_fault=k,
                                    steps_lost=3)
        x = MetricsExporter("big", cat, run, Clock(), top_ranks=a.top_ranks, steps_total=10**6)
        port = x.serve("127.0.0.1", 0)
        x.attempt_started(1, 0, {})
        x.ranks_placed(1, [RankPlacement(r, hosts[r], f"id-{hosts[r]}") for r in range(a.ranks)])
        for k in range(20):
            x.checkpoint_committed(1, {"step": 100 * (k + 1), "blocked_s": 0.05, "save_s": 2.0})
        hook = []
        for step in range(1, 31):
            secs = {r: 0.95 + rng.random() * 0.05 for r in range(a.ranks)}
            secs[rng.randrange(a.ranks)] = 2.5
            p = Progress(step, 2.0, 4e6, {r: step for r in range(a.ranks)}, False, secs)
            t = time.perf_counter()
            x.progressed(1, p, time.time())
            hook.append(time.perf_counter() - t)
        refresh = []
        for _ in range(5):
            t = time.perf_counter()
            x.refresh(time.time(), force=True)
            refresh.append(time.perf_counter() - t)
        ours = scrape(f"http://127.0.0.1:{port}/metrics", a.scrapes)
        x.close()

        reg = CollectorRegistry()
        g = Gauge("orchestrator_rank_step_seconds", "one series per rank", ["job", "rank", "host"], registry=reg)
        for r, s in secs.items():
            g.labels("big", str(r), hosts[r]).set(s)
        naive = MetricsExporter.__new__(MetricsExporter)
        naive.registry = reg
        naive._server = None
        nport = MetricsExporter.serve(naive, "127.0.0.1", 0)
        base = scrape(f"http://127.0.0.1:{nport}/metrics", a.scrapes)
        MetricsExporter.close(naive)
        cat.close()

    res = {
        "ranks": a.ranks, "hosts": a.ranks // a.ranks_per_host, "top_ranks": a.top_ranks, "scrapes": a.scrapes,
        "metrics_jsonl_rows": a.rows,
        "exporter": {"payload_bytes": ours[0], "scrape_median_s": ours[1], "series": ours[2]},
        "baseline_one_series_per_rank": {"payload_bytes": base[0], "scrape_median_s": base[1], "series": base[2]},
        "payload_ratio": ours[0] / base[0], "scrape_time_ratio": ours[1] / base[1],
        "progressed_hook_median_s": median(hook), "catalog_refresh_median_s": median(refresh),
    }
    print(json.dumps(res, indent=1))
    print(f"wrote {save('metrics_exporter', res)}")


if __name__ == "__main__":
    main()
