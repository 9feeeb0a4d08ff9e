"""What beacons cost a training step: the example job's trainer with beacons on and off.

    python bench/beacon_overhead.py [--steps 40] [--runs 3]

Beacons are the per-step beacon file, the per-step readiness ring, torch's
flight recorder and the thread that reads it once a second. Both variants run
`examples/job.yaml`'s model and layout (4 gloo ranks, FSDP) as local processes
without checkpoints, alternating in one invocation; the figure is the median
step time over steps 5..N of each run, then the median over runs.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from bench.common import median, save  # noqa: E402
from orchestrator.controller.trainer_config import trainer_config  # noqa: E402
from orchestrator.spec import load_job_file  # noqa: E402
from trainer.launch import ENV_BEACONS  # noqa: E402
from trainer.local_run import read_metrics, run_local  # noqa: E402


def one(cfg: dict, beacons: bool, tmp: Path) -> float:
    d = tmp / f"{'on' if beacons else 'off'}-{len(list(tmp.iterdir()))}"
    r = run_local(cfg, d, env_extra={ENV_BEACONS: "1" if beacons else "0"})
    if any(r.returncodes):
        raise RuntimeError(Path(r.logs[0]).read_text()[-2000:])
    return median([x["step_seconds"] for x in read_metrics(d)[4:]])


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--steps", type=int, default=40)
    ap.add_argument("--runs", type=int, default=3)
    args = ap.parse_args()
    spec = load_job_file(REPO / "examples" / "job.yaml")
    cfg = trainer_config(spec, dp=spec.parallelism.dp)
    cfg.update(steps=args.steps, checkpoint_interval_steps=10_000)
    on, off = [], []
    with tempfile.TemporaryDirectory() as t:
        for _ in range(args.runs):
            off.append(one(cfg, False, Path(t)))
            on.append(one(cfg, True, Path(t)))
            print(f"step time: beacons off {off[-1] * 1000:.1f} ms, on {on[-1] * 1000:.1f} ms", flush=True)
    m_on, m_off = median(on), median(off)
    print(f"median step: beacons on {m_on * 1000:.1f} ms, off {m_off * 1000:.1f} ms, ratio {m_on / m_off:.3f}")
    print(save("beacon_overhead", {"on_s": on, "off_s": off, "median_on_s": m_on, "median_off_s": m_off,
                                    "ratio": m_on / m_off, "job": "examples/job.yaml", "steps": args.steps}))


if __name__ == "__main__":
    main()
