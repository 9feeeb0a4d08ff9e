"""What an in-memory snapshot costs, as a ratio to a plain training step.

    python bench/snapshot_cost.py [--repeats 3] [--steps 24] [--every 2]

The same job (2 gloo ranks, dp=2) runs in turn without snapshots, with a snapshot
every `--every` steps written by the loop itself (sync), and with the same
snapshots written on the background thread (async, the default), in this one
invocation. A snapshot's cost is the time the loop waited for it (metrics.jsonl
`snapshot_seconds`, rank 0); a plain step is a step of the run without snapshots
(no checkpoint either: the only save is the final one). Reports medians, their
ratio to a plain step, the mean step time of each run (the snapshot's full
effect on the loop, including the CPU the writer thread takes from it), the size
of one rank's snapshot and the load average before and after (the machine is shared).
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


def config(steps: int, every: int, snap: Path | None, background: bool = True) -> dict:
    return {
        "model": {"dim": 256, "n_layers": 6, "n_heads": 8, "n_kv_heads": 4, "vocab_size": 257, "max_seq_len": 128},
        "parallel": {"dp": 2},
        "steps": steps, "seed": 1, "global_batch_size": 4, "micro_batch_size": 2, "seq_len": 64,
        "data_paths": [sysconfig.get_paths()["stdlib"] + "/*.py"], "data_max_bytes": 1_000_000,
        "checkpoint_interval_steps": 10_000, "checkpoint_async": False, "checkpoint_keep_last": 1,
        "collective_timeout_s": 300,
        "snapshot_interval_steps": every if snap else 0, "snapshot_dir": str(snap) if snap else None,
        "snapshot_async": background,
    }


def run(steps: int, every: int, d: Path, snap: Path | None, background: bool = True) -> list[dict]:
    r = run_local(config(steps, every, snap, background), d)
    if any(r.returncodes):
        raise RuntimeError(Path(r.logs[0]).read_text()[-2000:])
    return [x for x in read_metrics(d) if 2 < x["step"] < steps]  # no warm-up, no final save


def snapshot_bytes(steps: int, every: int, d: Path, snap: Path) -> int:
    """One rank's snapshot size: run once more, stopped before the end so that its snapshots stay (written by
    the loop, so that the newest is on disk when the rank exits)."""
    last = (steps - 1) // every * every
    r = run_local(config(steps, every, snap, background=False), d,
                  control={i: {"exit_at_step": last + 1} for i in range(2)})
    assert r.returncodes == [1, 1], r.returncodes
    return (snap / "rank-00000" / f"step-{last:08d}.pt").stat().st_size


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--steps", type=int, default=24)
    ap.add_argument("--every", type=int, default=2)
    args = ap.parse_args()
    load_before = os.getloadavg()
    plain: list[float] = []
    snap_s: dict[str, list[float]] = {"sync": [], "async": []}
    steps_with: dict[str, list[float]] = {"sync": [], "async": []}
    root = Path("/dev/shm") / f"snapshot-cost-{os.getpid()}"
    try:
        with tempfile.TemporaryDirectory() as t:
            for i in range(args.repeats):
                plain += [x["step_seconds"] for x in run(args.steps, args.every, Path(t) / f"off-{i}", None)]
                for mode in ("sync", "async"):
                    rows = run(args.steps, args.every, Path(t) / f"{mode}-{i}", root / f"{mode}-{i}",
                               background=mode == "async")
                    snap_s[mode] += [x["snapshot_seconds"] for x in rows if x["step"] % args.every == 0]
                    steps_with[mode] += [x["step_seconds"] for x in rows]
            size = snapshot_bytes(args.steps, args.every, Path(t) / "size", root / "size")
    finally:
        import shutil

        shutil.rmtree(root, ignore_errors=True)
    m_plain = median(plain)
    modes = {m: {"median_snapshot_s": median(snap_s[m]), "snapshot_to_step_ratio": median(snap_s[m]) / m_plain,
                 "mean_step_s_with_every": sum(steps_with[m]) / len(steps_with[m]),
                 "amortised_overhead_every_5": median(snap_s[m]) / m_plain / 5} for m in snap_s}
    result = {
        "args": vars(args), "ranks": 2, "model": config(1, 1, None)["model"],
        "snapshot_bytes_per_rank": size, "median_plain_step_s": m_plain,
        "mean_step_s_without": sum(plain) / len(plain), "modes": modes,
        "loadavg_before": load_before, "loadavg_after": os.getloadavg(),
        "raw": {"plain_step_s": plain, "snapshot_s": snap_s, "step_s_with_snapshots": steps_with},
    }
    path = save("snapshot_cost", result)
    for m, r in modes.items():
        print(f"{m}: snapshot {r['median_snapshot_s'] * 1e3:.1f} ms vs plain step {m_plain * 1e3:.1f} ms: ratio "
              f"{r['snapshot_to_step_ratio']:.3f}; mean step {r['mean_step_s_with_every']:.3f} s with a snapshot "
              f"every {args.every} against {result['mean_step_s_without']:.3f} s without")
    print(f"({size / 1e6:.1f} MB per rank) -> {path}")


if __name__ == "__main__":
    main()
