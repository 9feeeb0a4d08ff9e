"""Run the trainer as N local processes (a minimal torchrun): parity checks, benches, tests.

`python -m trainer.local_run CONFIG.json RUN_DIR` starts one `trainer.launch`
process per rank on 127.0.0.1 with gloo (or NCCL when GPUs are visible).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from trainer.files import read_jsonl
from trainer.ports import free_port


def world_size_of(cfg: dict[str, Any]) -> int:
    p = cfg.get("parallel", {})
    return p.get("dp", 1) * p.get("tp", 1) * p.get("pp", 1) * p.get("cp", 1)


@dataclass
class LocalRun:
    returncodes: list[int]
    logs: list[str]
    wall_s: float


@dataclass
class LocalRanks:
    """Rank processes started by `start_local`, still running."""

    procs: list[subprocess.Popen[bytes]]
    logs: list[str]
    run_dir: Path
    started: float

    def beacon_path(self, rank: int) -> Path:
        return self.run_dir / f"beacon-{rank}.json"

    def control_path(self, rank: int) -> Path:
        return self.run_dir / f"control-{rank}.json"

    def kill(self) -> None:
        for p in self.procs:
            if p.poll() is None:
                p.kill()
        for p in self.procs:
            p.wait()

    def wait(self, timeout_s: float) -> LocalRun:
        """Wait for every rank; kills the rest if one outlives the timeout."""
        rcs = []
        deadline = time.time() + timeout_s
        for p in self.procs:
            try:
                rcs.append(p.wait(timeout=max(1.0, deadline - time.time())))
            except subprocess.TimeoutExpired:
                self.kill()
                raise
        return LocalRun(rcs, self.logs, time.perf_counter() - self.started)


def start_local(cfg: dict[str, Any], run_dir: Path, *, ckpt_dir: Path | None = None, attempt: int = 1,
                control: dict[int, dict[str, Any]] | None = None,
                env_extra: dict[str, str] | None = None) -> LocalRanks:
    """Start every rank as a process and return at once."""
    world = world_size_of(cfg)
    run_dir.mkdir(parents=True, exist_ok=True)
    cfg_path = run_dir / f"trainer-{attempt}.json"
    cfg_path.write_text(json.dumps(cfg))
    port = free_port()
    procs, logs = [], []
    t0 = time.perf_counter()
    for rank in range(world):
        env = dict(os.environ, RANK=str(rank), WORLD_SIZE=str(world), LOCAL_RANK=str(rank),
                   MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), OMP_NUM_THREADS="1",
                   TRAINER_RUN_DIR=str(run_dir), TRAINER_CHECKPOINT_DIR=str(ckpt_dir or run_dir / "ckpt"),
                   TRAINER_ATTEMPT=str(attempt), TRAINER_BEACON_FILE=str(run_dir / f"beacon-{rank}.json"))
        env.setdefault("CUDA_VISIBLE_DEVICES", "")
        env.update(env_extra or {})
        if control and rank in control:
            cpath = run_dir / f"control-{rank}.json"
            cpath.write_text(json.dumps(control[rank]))
            env["TRAINER_CONTROL_FILE"] = str(cpath)
        log = run_dir / f"rank-{rank}-attempt-{attempt}.log"
        logs.append(str(log))
        with open(log, "w") as f:
            procs.append(subprocess.Popen([sys.executable, "-m", "trainer.launch", str(cfg_path)], env=env,
                                          stdout=f, stderr=subprocess.STDOUT))
    return LocalRanks(procs, logs, run_dir, t0)


def run_local(cfg: dict[str, Any], run_dir: Path, *, ckpt_dir: Path | None = None, attempt: int = 1,
              control: dict[int, dict[str, Any]] | None = None, timeout_s: float = 600,
              env_extra: dict[str, str] | None = None) -> LocalRun:
    """Start every rank, wait for all of them; kills the rest if one outlives the timeout."""
    ranks = start_local(cfg, run_dir, ckpt_dir=ckpt_dir, attempt=attempt, control=control, env_extra=env_extra)
    return ranks.wait(timeout_s)


def read_metrics(run_dir: Path) -> list[dict[str, Any]]:
    return read_jsonl(run_dir / "metrics.jsonl")


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) != 2:
        print("usage: python -m trainer.local_run CONFIG.json RUN_DIR", file=sys.stderr)
        return 2
    r = run_local(json.loads(Path(argv[0]).read_text()), Path(argv[1]))
    print(json.dumps({"returncodes": r.returncodes, "wall_s": r.wall_s}))
    return 0 if all(c == 0 for c in r.returncodes) else 1


if __name__ == "__main__":
    sys.exit(main())
