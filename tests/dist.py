"""Run the real trainer entry point as N local gloo processes (no Ray)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from trainer.local_run import LocalRun, read_metrics, run_local


def run_ranks(cfg: dict[str, Any], run_dir: Path, **kw: Any) -> LocalRun:
    return run_local(cfg, run_dir, **kw)


def metrics(run_dir: Path) -> list[dict[str, Any]]:
    return read_metrics(run_dir)


def final_losses(rows: list[dict[str, Any]]) -> dict[int, float]:
    """Loss per step, the latest attempt's value winning (redone steps)."""
    out: dict[int, float] = {}
    for r in rows:
        out[r["step"]] = r["loss"]
    return out


def tiny_cfg(*, steps: int = 10, dp: int = 2, tp: int = 1, pp: int = 1, cp: int = 1, interval: int = 4,
             async_save: bool = True, gbs: int = 8, **extra: Any) -> dict[str, Any]:
    import sysconfig

    stdlib = sysconfig.get_paths()["stdlib"]
    cfg = {
        "model": {"dim": 32, "n_layers": 2, "n_heads": 4, "n_kv_heads": 2, "vocab_size": 257,
                  "max_seq_len": 64},
        "parallel": {"dp": dp, "tp": tp, "pp": pp, "cp": cp},
        "optim": {"lr_peak": 0.01, "lr_min": 0.001, "warmup_steps": 2},
        "steps": steps, "seed": 11, "global_batch_size": gbs, "micro_batch_size": 2, "seq_len": 32,
        "data_paths": [f"{stdlib}/json/*.py"], "data_max_bytes": 200_000,
        "checkpoint_interval_steps": interval, "checkpoint_async": async_save, "checkpoint_keep_last": 5,
        "collective_timeout_s": 60,
    }
    cfg.update(extra)
    return cfg
