"""How long the training loop waits on a checkpoint: async against synchronous saves.

    python bench/checkpoint_stall.py [--repeats 3]

The same job runs alternately with `checkpoint_async` true and false in this one
invocation; the stall of a save is the time the loop is blocked in
`Checkpointer.save` (metrics.jsonl `checkpoint_blocked_seconds`). Reports the
median stall of each mode and their ratio (goal: async <= 5% of sync).
"""

from __future__ import annotations

import argparse
import sys
import sysconfig
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import median, save  # noqa: E402
from trainer.local_run import read_metrics, run_local  # noqa: E402


def config(async_save: bool, steps: int, interval: int) -> dict:
    return {
        "model": {"dim": 256, "n_layers": 6, "n_heads": 8, "n_kv_heads": 4, "vocab_size": 257, "max_seq_len": 128},
        "parallel": {"dp": 2},
        "steps": steps, "seed": 1, "global_batch_size": 4, "micro_batch_size": 2, "seq_len": 64,
        "data_paths": [sysconfig.get_paths()["stdlib"] + "/*.py"], "data_max_bytes": 1_000_000,
        "checkpoint_interval_steps": interval, "checkpoint_async": async_save, "checkpoint_keep_last": 2,
        "collective_timeout_s": 300,
    }


def stalls(async_save: bool, steps: int, interval: int, d: Path) -> tuple[list[float], list[float]]:
    r = run_local(config(async_save, steps, interval), d)
    if any(r.returncodes):
        raise RuntimeError(Path(r.logs[0]).read_text()[-2000:])
    rows = read_metrics(d)
    # A save's stall is spread over the saving step and (async staging) the next
    # step's optimizer wait; the last step's save is waited for after the loop.
    saves = [x["checkpoint_blocked_seconds"] + next((y["checkpoint_blocked_seconds"] for y in rows
                                                     if y["step"] == x["step"] + 1), 0.0)
             for x in rows if x["step"] % interval == 0 and x["step"] < steps]
    plain = [x["step_seconds"] for x in rows if x["step"] % interval and x["step"] > 2]
    return saves, plain


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--steps", type=int, default=25)
    ap.add_argument("--interval", type=int, default=4)
    args = ap.parse_args()
    result: dict[str, list[float]] = {"async": [], "sync": [], "step": []}
    with tempfile.TemporaryDirectory() as t:
        for i in range(args.repeats):
            for mode in ("sync", "async"):
                s, plain = stalls(mode == "async", args.steps, args.interval, Path(t) / f"{mode}-{i}")
                result[mode] += s
                result["step"] += plain
    a, s = median(result["async"]), median(result["sync"])
    out = {"async_stall_s": a, "sync_stall_s": s, "ratio": a / s, "median_step_s": median(result["step"]),
           "saves": {"async": len(result["async"]), "sync": len(result["sync"])},
           "model": "dim256 L6 (5.6M params + AdamW state), dp=2"}
    print(f"async stall {a * 1000:.1f} ms, sync stall {s * 1000:.1f} ms, ratio {a / s:.3f} "
          f"(median step {out['median_step_s'] * 1000:.0f} ms)")
    print(save("checkpoint_stall", out))


if __name__ == "__main__":
    main()
