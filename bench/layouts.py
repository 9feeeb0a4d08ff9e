"""Tokens/s and peak memory per rank for several 4D layouts on this machine.

    python bench/layouts.py [--steps 12] [--repeats 3]

Runs the real trainer as local gloo processes (one thread each). Tokens/s is the
median over steps 3..N (the first steps include warm-up), then the median over
repeats; peak RSS is the largest ru_maxrss of any rank.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import median, save  # noqa: E402
from trainer.local_run import read_metrics, run_local, world_size_of  # noqa: E402

LAYOUTS = [
    {"dp": 1}, {"dp": 2}, {"dp": 4}, {"tp": 2}, {"cp": 2}, {"pp": 2, "schedule": "1f1b"},
    {"dp": 2, "tp": 2}, {"tp": 2, "cp": 2, "pp": 2}, {"dp": 2, "tp": 2, "cp": 2, "pp": 2},
]


def config(data: str, layout: dict, steps: int) -> dict:
    cfg = {
        "model": {"dim": 128, "n_layers": 4, "n_heads": 8, "n_kv_heads": 4, "vocab_size": 257, "max_seq_len": 256},
        "parallel": {"dp": 1, "tp": 1, "pp": 1, "cp": 1, "microbatches": 4},
        "steps": steps, "seed": 1, "global_batch_size": 16, "micro_batch_size": 4, "seq_len": 128,
        "data_paths": [data], "data_max_bytes": 2_000_000, "checkpoint_interval_steps": 10_000,
        "checkpoint_async": True, "checkpoint_keep_last": 1, "collective_timeout_s": 300,
    }
    cfg["parallel"].update(layout)
    return cfg


def run(layout: dict, steps: int, repeats: int, data: str, tmp: Path) -> dict:
    tps, rss = [], []
    for i in range(repeats):
        d = tmp / f"{'-'.join(f'{k}{v}' for k, v in layout.items())}-{i}"
        cfg = config(data, layout, steps)
        r = run_local(cfg, d)
        if any(r.returncodes):
            raise RuntimeError(f"{layout} failed: {Path(r.logs[0]).read_text()[-2000:]}")
        rows = read_metrics(d)[2:]
        tps.append(median([x["tokens_per_second"] for x in rows]))
        beacons = [json.loads((d / f"beacon-{k}.json").read_text()) for k in range(world_size_of(cfg))]
        rss.append(max(b.get("max_rss_mb", 0.0) for b in beacons))
    return {"layout": layout, "world_size": world_size_of(config(data, layout, steps)),
            "tokens_per_second": median(tps), "peak_rss_mb_per_rank": median(rss), "runs": len(tps)}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--steps", type=int, default=12)
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as t:
        tmp = Path(t)
        data = "{stdlib}/*.py".replace("{stdlib}", __import__("sysconfig").get_paths()["stdlib"])
        rows = [run(lay, args.steps, args.repeats, data, tmp) for lay in LAYOUTS]
    for r in rows:
        print(f"{json.dumps(r['layout']):55s} ws={r['world_size']:2d}  {r['tokens_per_second']:8.0f} tok/s  "
              f"{r['peak_rss_mb_per_rank']:6.0f} MB/rank")
    print(save("layouts", {"model": "dim128 L4 H8 KV4, seq 128, global batch 16", "rows": rows}))


if __name__ == "__main__":
    main()
