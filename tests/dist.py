"""Run the real trainer entry point as N local gloo processes (no Ray)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tests.services import free_port


@dataclass
class RankRun:
    returncodes: list[int]
    logs: list[str]


def run_ranks(cfg: dict[str, Any], run_dir: Path, *, ckpt_dir: Path | None = None, attempt: int = 1,
              control: dict[int, dict[str, Any]] | None = None, timeout_s: float = 240) -> RankRun:
    world = cfg["parallel"]["dp"] * cfg["parallel"].get("tp", 1) * cfg["parallel"].get("pp", 1) * \
        cfg["parallel"].get("cp", 1)
    run_dir.mkdir(parents=True, exist_ok=True)
    cfg_path = run_dir / f"trainer-{attempt}.json"
    cfg_path.write_text(json.dumps(cfg))
    port = free_port()
    procs, logs = [], []
    for rank in range(world):
        env = dict(os.environ, RANK=str(rank), WORLD_SIZE=str(world), LOCAL_RANK=str(rank),
                   MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), OMP_NUM_THREADS="1",
                   TRAINER_RUN_DIR=str(run_dir), TRAINER_CHECKPOINT_DIR=str(ckpt_dir or run_dir / "ckpt"),
                   TRAINER_ATTEMPT=str(attempt), TRAINER_BEACON_FILE=str(run_dir / f"beacon-{rank}.json"),
                   CUDA_VISIBLE_DEVICES="")
        if control and rank in control:
            cpath = run_dir / f"control-{rank}.json"
            cpath.write_text(json.dumps(control[rank]))
            env["TRAINER_CONTROL_FILE"] = str(cpath)
        log = run_dir / f"rank-{rank}-attempt-{attempt}.log"
        logs.append(str(log))
        procs.append(subprocess.Popen([sys.executable, "-m", "trainer.launch", str(cfg_path)], env=env,
                                      stdout=open(log, "w"), stderr=subprocess.STDOUT))  # noqa: SIM115
    rcs = []
    for p in procs:
        try:
            rcs.append(p.wait(timeout=timeout_s))
        except subprocess.TimeoutExpired:
            for q in procs:
                q.kill()
            raise
    return RankRun(rcs, logs)


def metrics(run_dir: Path) -> list[dict[str, Any]]:
    path = run_dir / "metrics.jsonl"
    return [json.loads(x) for x in path.read_text().splitlines() if x.strip()] if path.exists() else []


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
