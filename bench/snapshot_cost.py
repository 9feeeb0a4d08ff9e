"""What an in-memory snapshot costs, as a ratio to a plain training step.

    python bench/snapshot_cost.py [--repeats 3] [--steps 24] [--every 2]

The same job (2 gloo ranks, dp=2) runs alternately without snapshots and with a
snapshot every `--every` steps, in this one invocation. A snapshot's cost is the
time the loop spends writing it (metrics.jsonl `snapshot_seconds`, rank 0); a
plain step is a step of the run without snapshots (no checkpoint either: the
only save is the final one). Reports medians, their ratio, the step time of the
two runs (the snapshot's full effect on the loop), the size of one rank's
snapshot and the load average before and after (the machine is shared).
"""

from __future__ import annotations

import argparse
import os
import sys
import sysconfig
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import median, save  # noqa: E402
from trainer.local_run import read_metrics, run_local  # noqa: E402


def config(steps: int, every: int, snap: Path | None) -> dict:
    return {
        "model": {"dim": 256, "n_layers": 6, "n_heads": 8, "n_kv_heads": 4, "vocab_size": 257, "max_seq_len": 128},
        "parallel": {"dp": 2},
        "steps": steps, "seed": 1, "global_batch_size": 4, "micro_batch_size": 2, "seq_len": 64,
        "data_paths": [sysconfig.get_paths()["stdlib"] + "/*.py"], "data_max_bytes": 1_000_000,
        "checkpoint_interval_steps": 10_000, "checkpoint_async": False, "checkpoint_keep_last": 1,
        "collective_timeout_s": 300,
        "snapshot_interval_steps": every if snap else 0, "snapshot_dir": str(snap) if snap else None,
    }


def run(steps: int, every: int, d: Path, snap: Path | None) -> list[dict]:
    r = run_local(config(steps, every, snap), d)
    if any(r.returncodes):
        raise RuntimeError(Path(r.logs[0]).read_text()[-2000:])
    return [x for x in read_metrics(d) if 2 < x["step"] < steps]  # no warm-up, no final save


def snapshot_bytes(steps: int, every: int, d: Path, snap: Path) -> int:
    """One rank's snapshot size: run once more, stopped before the end so that its snapshots stay."""
    last = (steps - 1) // every * every
    r = run_local(config(steps, every, snap), d, control={i: {"exit_at_step": last + 1} for i in range(2)})
    assert r.returncodes == [1, 1], r.returncodes
    return (snap / "rank-00000" / f"step-{last:08d}.pt").stat().st_size


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--steps", type=int, default=24)
    ap.add_argument("--every", type=int, default=2)
    args = ap.parse_args()
    load_before = os.getloadavg()
    snap_s: list[float] = []
    plain: list[float] = []
    with_snap_steps: list[float] = []
    root = Path("/dev/shm") / f"snapshot-cost-{os.getpid()}"
    try:
        with tempfile.TemporaryDirectory() as t:
            for i in range(args.repeats):
                plain += [x["step_seconds"] for x in run(args.steps, args.every, Path(t) / f"off-{i}", None)]
                rows = run(args.steps, args.every, Path(t) / f"on-{i}", root / f"on-{i}")
                snap_s += [x["snapshot_seconds"] for x in rows if x["step"] % args.every == 0]
                with_snap_steps += [x["step_seconds"] for x in rows]
            size = snapshot_bytes(args.steps, args.every, Path(t) / "size", root / "size")
    finally:
        import shutil

        shutil.rmtree(root, ignore_errors=True)
    m_snap, m_plain = median(snap_s), median(plain)
    result = {
        "args": vars(args), "ranks": 2, "model": config(1, 1, None)["model"],
        "snapshot_bytes_per_rank": size,
        "median_snapshot_s": m_snap, "median_plain_step_s": m_plain, "snapshot_to_step_ratio": m_snap / m_plain,
        "mean_step_s_without": sum(plain) / len(plain), "mean_step_s_with_every": sum(with_snap_steps) /
        len(with_snap_steps),
        "amortised_overhead_every_5": m_snap / m_plain / 5,
        "loadavg_before": load_before, "loadavg_after": os.getloadavg(),
        "raw": {"snapshot_s": snap_s, "plain_step_s": plain, "step_s_with_snapshots": with_snap_steps},
    }
    path = save("snapshot_cost", result)
    print(f"snapshot {m_snap * 1e3:.1f} ms vs plain step {m_plain * 1e3:.1f} ms: ratio {m_snap / m_plain:.3f} "
          f"({size / 1e6:.1f} MB per rank); every 5 steps: {m_snap / m_plain / 5:.1%} of step time -> {path}")


if __name__ == "__main__":
    main()
