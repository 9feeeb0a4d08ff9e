"""What the SDC check costs a training step: the example job's trainer with the check every step and off.

    python bench/sdc_check.py [--steps 30] [--runs 3] [--every 1]

With `--every 1` every step carries one check (a no-grad forward of one
micro-batch, a float64 checksum and an all-gather of one number per replica):
the ratio is the cost of one check against a step. With K > 1 the cost is
amortised over K steps; the per-step figure for any K follows from the
`--every 1` ratio r as 1 + (r - 1) / K. Both variants run `examples/job.yaml`'s
model and layout (4 gloo ranks, FSDP) as local processes without checkpoints,
alternating in one invocation; the figure is the median step time over steps
5..N of each run, then the median over runs. The load average before and after
is saved with the results (on a shared machine it decides how noisy they are).
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from bench.common import median, save  # noqa: E402
from orchestrator.controller.trainer_config import trainer_config  # noqa: E402
from orchestrator.spec import load_job_file  # noqa: E402
from trainer.local_run import read_metrics, run_local  # noqa: E402


def one(cfg: dict, every: int, tmp: Path) -> float:
    d = tmp / f"k{every}-{len(list(tmp.iterdir()))}"
    r = run_local({**cfg, "sdc_check_interval_steps": every}, d)
    if any(r.returncodes):
        raise RuntimeError(Path(r.logs[0]).read_text()[-2000:])
    return median([x["step_seconds"] for x in read_metrics(d)[4:]])


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--steps", type=int, default=30)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--every", type=int, default=1)
    args = ap.parse_args()
    spec = load_job_file(REPO / "examples" / "job.yaml")
    cfg = trainer_config(spec, dp=spec.parallelism.dp)
    cfg.update(steps=args.steps, checkpoint_interval_steps=10_000)
    on, off = [], []
    load_before = os.getloadavg()
    with tempfile.TemporaryDirectory() as t:
        for _ in range(args.runs):
            off.append(one(cfg, 0, Path(t)))
            on.append(one(cfg, args.every, Path(t)))
            print(f"step time: check off {off[-1] * 1000:.1f} ms, every {args.every} {on[-1] * 1000:.1f} ms",
                  flush=True)
    load_after = os.getloadavg()
    m_on, m_off = median(on), median(off)
    pairs = median([a / b for a, b in zip(on, off, strict=True)])
    print(f"median step: check every {args.every} {m_on * 1000:.1f} ms, off {m_off * 1000:.1f} ms, "
          f"ratio {m_on / m_off:.3f} (median of the pairs {pairs:.3f}); load average (1, 5, 15 min) "
          f"before {load_before}, after {load_after}")
    print(save(f"sdc_check_every{args.every}", {
        "on_s": on, "off_s": off, "median_on_s": m_on, "median_off_s": m_off, "ratio": m_on / m_off,
        "pair_ratio_median": pairs, "every": args.every, "job": "examples/job.yaml", "steps": args.steps,
        "parallelism": spec.parallelism.model_dump(), "load_average_before": load_before,
        "load_average_after": load_after}))


if __name__ == "__main__":
    main()
