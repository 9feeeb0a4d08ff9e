"""One rank that only builds the trainer's model, for the init benchmark and tests.

    python -m bench.build_model_rank CONFIG.json OUT_DIR {meta|eager|both} [--dump]

Reads RANK/WORLD_SIZE/MASTER_ADDR/MASTER_PORT like `trainer.launch`, builds the
model through `trainer.train.build_model` (meta-device init, or the eager path
that builds and initialises the whole model or stage on the CPU first), and
writes OUT_DIR/rank-N.json with the peak RSS before and after. With --dump the
rank also writes the full value of every parameter it holds (DTensors
gathered) to OUT_DIR/params-N.pt; `both` builds the eager model and then the
meta one in the same process and dumps both (eager-N.pt, params-N.pt).
"""

from __future__ import annotations

import json
import os
import resource
import sys
from pathlib import Path

import torch
import torch.distributed as dist

from trainer.config import TrainConfig
from trainer.parallel_dims import ParallelDims
from trainer.train import build_model


def rss_mb() -> float:
    """Peak resident set size of this process so far (Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def current_rss_mb() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def full_params(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """Every parameter this rank holds, at its full size (DTensors gathered over their mesh)."""
    return {name: (t.full_tensor() if hasattr(t, "full_tensor") else t).detach().clone()
            for name, t in model.named_parameters()}


def main() -> None:
    cfg_path, out_dir, mode = sys.argv[1], Path(sys.argv[2]), sys.argv[3]
    dump = "--dump" in sys.argv[4:]
    cfg = TrainConfig.from_dict(json.loads(Path(cfg_path).read_text()))
    torch.manual_seed(cfg.seed)
    dist.init_process_group("gloo")
    rank = dist.get_rank()
    p = cfg.parallel
    dims = ParallelDims(dp=p.dp, tp=p.tp, pp=p.pp, cp=p.cp, world_size=dist.get_world_size())
    mesh = dims.build_mesh("cpu")
    dist.barrier()
    if mode == "both":
        eager = build_model(cfg, dims, mesh, torch.device("cpu"), meta_init=False)
        out_dir.mkdir(parents=True, exist_ok=True)
        torch.save(full_params(eager.model), out_dir / f"eager-{rank}.pt")
        del eager
    before, before_now = rss_mb(), current_rss_mb()
    parts = build_model(cfg, dims, mesh, torch.device("cpu"), meta_init=mode != "eager")
    after, after_now = rss_mb(), current_rss_mb()
    local = sum(t.to_local().numel() if hasattr(t, "to_local") else t.numel() for t in parts.model.parameters())
    full = full_params(parts.model) if dump else {}
    dist.barrier()
    out_dir.mkdir(parents=True, exist_ok=True)
    if dump:
        torch.save(full, out_dir / f"params-{rank}.pt")
    (out_dir / f"rank-{rank}.json").write_text(json.dumps({
        "rank": rank, "mode": mode, "peak_rss_mb_before_build": before, "peak_rss_mb_after_build": after,
        "rss_mb_before_build": before_now, "rss_mb_after_build": after_now, "local_params": local}))
    dist.destroy_process_group()


if __name__ == "__main__":
    main()
