"""Peak memory per rank while building the model: meta-device init against the eager path.

The model is examples/job.yaml's scaled to four times its parameters (and,
with --scale, larger ones), sharded with FSDP over 4 gloo ranks on the CPU.
Each rank builds the model and nothing else (`bench/build_model_rank.py`);
the peak RSS after the build minus the RSS before it is what building cost.
Both paths run in the same invocation, alternating, `--repeats` times.

    python bench/init_memory.py [--ranks 4] [--repeats 3] [--scale 4 64]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.common import median, save  # noqa: E402
from trainer.model import ModelArgs  # noqa: E402
from trainer.ports import free_port  # noqa: E402


def example_model() -> dict[str, Any]:
    return dict(yaml.safe_load((ROOT / "examples" / "job.yaml").read_text())["model"])


def scaled_model(factor: float) -> dict[str, Any]:
    """The example's model with n_layers and dim grown until it has about `factor` times its parameters."""
    base = example_model()
    target = factor * ModelArgs(**base).num_params()
    best = dict(base)
    for dim in range(base["dim"], base["dim"] * 64 + 1, base["n_heads"] * 4):
        for layers in range(base["n_layers"], base["n_layers"] * 16 + 1):
            m = {**base, "dim": dim, "n_layers": layers}
            if abs(ModelArgs(**m).num_params() - target) < abs(ModelArgs(**best).num_params() - target):
                best = m
    return best


def train_config(model: dict[str, Any], ranks: int, **parallel: int) -> dict[str, Any]:
    return {"model": model, "parallel": {"dp": ranks, **parallel}, "seed": 1234, "steps": 1,
            "global_batch_size": ranks, "micro_batch_size": 1, "seq_len": 32, "data_paths": []}


def _wait_all(procs: list[subprocess.Popen[bytes]], timeout_s: float, grace_s: float = 5.0) -> int | None:
    """Wait for every rank; the first rank that failed, or None. Its peers, blocked in a collective
    with it, get `grace_s` to leave on their own before they are killed (they would wait out the
    collective timeout)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        failed = [r for r, pr in enumerate(procs) if pr.poll() not in (None, 0)]
        if failed:
            deadline = min(deadline, time.monotonic() + grace_s)
        if all(pr.poll() is not None for pr in procs):
            break
        time.sleep(0.05)
    failed = [r for r, pr in enumerate(procs) if pr.poll() not in (None, 0)]
    if not failed and any(pr.poll() is None for pr in procs):
        raise TimeoutError(f"ranks still running after {timeout_s:.0f} s")
    return failed[0] if failed else None


def launch(cfg: dict[str, Any], out_dir: Path, mode: str, *, dump: bool = False,
           timeout_s: float = 600) -> list[dict[str, Any]]:
    """Run one build on every rank of `cfg`'s layout; returns each rank's record."""
    p = cfg["parallel"]
    world = p.get("dp", 1) * p.get("tp", 1) * p.get("pp", 1) * p.get("cp", 1)
    out_dir.mkdir(parents=True, exist_ok=True)
    cfg_path = out_dir / "config.json"
    cfg_path.write_text(json.dumps(cfg))
    port = free_port()
    procs, logs = [], []
    for rank in range(world):
        env = dict(os.environ, RANK=str(rank), WORLD_SIZE=str(world), MASTER_ADDR="127.0.0.1",
                   MASTER_PORT=str(port), OMP_NUM_THREADS="1", CUDA_VISIBLE_DEVICES="",
                   PYTHONPATH=str(ROOT))
        args = [sys.executable, "-m", "bench.build_model_rank", str(cfg_path), str(out_dir), mode]
        logs.append(out_dir / f"rank-{rank}.log")
        with open(logs[-1], "w") as log:
            procs.append(subprocess.Popen(args + (["--dump"] if dump else []), env=env, cwd=ROOT,
                                          stdout=log, stderr=subprocess.STDOUT))
    try:
        failed = _wait_all(procs, timeout_s)
    finally:
        for pr in procs:
            if pr.poll() is None:
                pr.kill()
                pr.wait()
    if failed is not None:
        raise RuntimeError(f"rank {failed} exited {procs[failed].returncode}:\n{logs[failed].read_text()[-2000:]}")
    return [json.loads((out_dir / f"rank-{r}.json").read_text()) for r in range(world)]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--ranks", type=int, default=4)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--scale", type=float, nargs="+", default=[4.0, 64.0])
    args = ap.parse_args()
    base_params = ModelArgs(**example_model()).num_params()
    results = []
    with tempfile.TemporaryDirectory(prefix="init-memory-") as tmp:
        for factor in args.scale:
            model = scaled_model(factor)
            params = ModelArgs(**model).num_params()
            cfg = train_config(model, args.ranks)
            runs: dict[str, list[list[dict[str, Any]]]] = {"eager": [], "meta": []}
            for i in range(args.repeats):
                for mode in ("eager", "meta"):
                    runs[mode].append(launch(cfg, Path(tmp) / f"{factor}-{mode}-{i}", mode))
            row: dict[str, Any] = {"factor": factor, "model": model, "params": params,
                                   "fp32_full_model_mb": params * 4 / 2**20, "raw": runs}
            for mode, reps in runs.items():
                peak = [max(r["peak_rss_mb_after_build"] for r in rep) for rep in reps]
                cost = [max(r["peak_rss_mb_after_build"] - r["rss_mb_before_build"] for r in rep) for rep in reps]
                row[mode] = {"peak_rss_mb_max_rank_median": median(peak), "build_cost_mb_max_rank_median": median(cost),
                             "local_params": reps[0][0]["local_params"]}
            results.append(row)
            print(f"x{factor:g} ({params / 1e6:.1f} M params, {row['fp32_full_model_mb']:.0f} MiB fp32) over "
                  f"{args.ranks} ranks: peak RSS per rank eager {row['eager']['peak_rss_mb_max_rank_median']:.0f} MiB "
                  f"(build +{row['eager']['build_cost_mb_max_rank_median']:.0f}), meta "
                  f"{row['meta']['peak_rss_mb_max_rank_median']:.0f} MiB "
                  f"(build +{row['meta']['build_cost_mb_max_rank_median']:.0f})")
    out = {"load_average_at_end": os.getloadavg(), "ranks": args.ranks, "repeats": args.repeats,
           "example_params": base_params, "runs": results}
    print(f"saved {save('init_memory', out)}")


if __name__ == "__main__":
    main()
