"""Numerical parity of a parallel layout against one process.

    python -m trainer.parity --layout dp=2,tp=2,cp=2,pp=2 --steps 4

Trains the same model on the same data from the same seed twice, once as a
single process and once under the layout, then compares the loss at every step
and every parameter of the final checkpoint. Prints a JSON report; exits 1
when a difference exceeds the tolerance.
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import tempfile
from pathlib import Path
from typing import Any

import torch
from torch.distributed.checkpoint.format_utils import dcp_to_torch_save

from trainer.checkpoint import committed_checkpoints
from trainer.local_run import read_metrics, run_local

LOSS_TOL = 2e-3
PARAM_TOL = 2e-3
"""Float32 reduction order differs between layouts and AdamW (lr 1e-2) amplifies it;
measured differences are around 1e-4 (BENCHMARKS.md)."""


def parse_layout(text: str) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for item in filter(None, text.split(",")):
        k, _, v = item.partition("=")
        k = k.strip()
        if k not in ("dp", "tp", "pp", "cp", "schedule", "stages_per_rank", "microbatches"):
            raise ValueError(f"unknown layout key {k!r}")
        out[k] = v.strip() if k == "schedule" else int(v)
    return out


def short_documents(folder: Path, n: int = 300, seed: int = 0) -> str:
    """Many short documents, so that masks at document boundaries are exercised."""
    rng = random.Random(seed)
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        text = "".join(rng.choice("abcdefgh ij\n") for _ in range(rng.randint(5, 40)))
        (folder / f"d{i:03d}.txt").write_text(text)
    return str(folder / "*.txt")


def base_config(data: str, steps: int) -> dict[str, Any]:
    return {
        "model": {"dim": 32, "n_layers": 4, "n_heads": 4, "n_kv_heads": 2, "vocab_size": 257, "max_seq_len": 64},
        "parallel": {"dp": 1, "tp": 1, "pp": 1, "cp": 1},
        "optim": {"lr_peak": 0.01, "lr_min": 0.001, "warmup_steps": 2},
        "steps": steps, "seed": 11, "global_batch_size": 8, "micro_batch_size": 2, "seq_len": 32,
        "data_paths": [data], "data_max_bytes": 200_000, "checkpoint_interval_steps": steps,
        "checkpoint_async": False, "checkpoint_keep_last": 1, "collective_timeout_s": 120,
    }


def final_params(ckpt_dir: Path, scratch: Path) -> dict[str, torch.Tensor]:
    latest = committed_checkpoints(ckpt_dir)[-1]
    out = scratch / f"{latest.path.parent.parent.name}-final.pt"
    dcp_to_torch_save(latest.path, out)
    return torch.load(out, weights_only=False)["model"]


def run_layout(cfg: dict[str, Any], run_dir: Path) -> tuple[list[float], dict[str, torch.Tensor]]:
    r = run_local(cfg, run_dir)
    if any(r.returncodes):
        log = Path(r.logs[next(i for i, c in enumerate(r.returncodes) if c)]).read_text()
        raise RuntimeError(f"layout {cfg['parallel']} failed: {r.returncodes}\n{log[-3000:]}")
    losses = [row["loss"] for row in read_metrics(run_dir)]
    return losses, final_params(run_dir / "ckpt", run_dir)


def compare(layout: dict[str, Any], steps: int, workdir: Path,
            reference: tuple[list[float], dict[str, torch.Tensor]] | None = None) -> dict[str, Any]:
    data = short_documents(workdir / "data")
    cfg = base_config(data, steps)
    if reference is None:
        reference = run_layout(cfg, workdir / "reference")
    par = json.loads(json.dumps(cfg))
    par["parallel"].update(layout)
    name = "-".join(f"{k}{v}" for k, v in layout.items())
    losses, params = run_layout(par, workdir / name)
    ref_losses, ref_params = reference
    loss_diff = max(abs(a - b) for a, b in zip(losses, ref_losses, strict=True))
    if set(params) != set(ref_params):
        raise RuntimeError(f"parameter names differ: {sorted(set(params) ^ set(ref_params))[:5]}")
    param_diff = max(float((params[k] - ref_params[k]).abs().max()) for k in ref_params)
    return {"layout": layout, "steps": steps, "max_loss_diff": loss_diff, "max_param_diff": param_diff,
            "loss_tol": LOSS_TOL, "param_tol": PARAM_TOL,
            "ok": loss_diff <= LOSS_TOL and param_diff <= PARAM_TOL, "losses": losses, "reference": ref_losses}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--layout", required=True, help="e.g. dp=2,tp=2,cp=1,pp=2,schedule=1f1b")
    ap.add_argument("--steps", type=int, default=4)
    args = ap.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="parity-") as tmp:
        report = compare(parse_layout(args.layout), args.steps, Path(tmp))
    print(json.dumps(report, indent=1))
    return 0 if report["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
