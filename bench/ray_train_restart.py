"""Fault to first step after resume: this project against Ray Train v2 on the same job.

    python bench/ray_train_restart.py [--runs 3]

Both sides train examples/job.yaml's model and layout (Llama, FSDP over 4 CPU
ranks on gloo, checkpoints every 25 steps with torch.distributed.checkpoint),
and in each run rank 1's process gets SIGKILL once training passes step 30.
Ray Train uses TorchTrainer with FailureConfig(max_failures=1) and its own
checkpoint bookkeeping (ray.train.report / get_checkpoint). Runs alternate
between the two systems in one invocation; reports medians and their ratio.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import tempfile
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from bench.common import median, save  # noqa: E402
from bench.recovery import one_run  # noqa: E402

STEPS = 60
KILL_AFTER_STEP = 30


def train_loop(config: dict) -> None:
    """Ray Train worker: the project's model, data order and FSDP, Ray Train's checkpointing."""
    import ray.train
    import torch
    import torch.distributed as dist
    import torch.distributed.checkpoint as dcp
    import torch.nn.functional as F
    from torch.distributed.checkpoint.state_dict import get_state_dict, set_state_dict
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.fsdp import fully_shard

    from trainer.config import TrainConfig
    from trainer.data import DataPosition, SampleOrder, load_token_stream, rank_samples
    from trainer.model import Transformer
    from trainer.train import lr_at

    torch.set_num_threads(1)
    cfg = TrainConfig.from_dict(config["trainer"])
    rank, world = dist.get_rank(), dist.get_world_size()
    out = Path(config["out"])
    (out / f"pid-{rank}").write_text(str(os.getpid()))
    mesh = init_device_mesh("cpu", (world,))
    model = Transformer(cfg.model)
    model.init_weights(cfg.seed)
    for block in model.layers.values():
        fully_shard(block, mesh=mesh)
    fully_shard(model, mesh=mesh)
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.optim.lr_peak, weight_decay=cfg.optim.weight_decay)
    start = 0
    ckpt = ray.train.get_checkpoint()
    if ckpt is not None:
        with ckpt.as_directory() as d:
            msd, osd = get_state_dict(model, opt)
            state = {"model": msd, "optim": osd, "step": 0}
            dcp.load(state, checkpoint_id=d)
            set_state_dict(model, opt, model_state_dict=state["model"], optim_state_dict=state["optim"])
            start = int(state["step"])
    order = SampleOrder(load_token_stream(cfg.data_paths, cfg.data_max_bytes), cfg.seq_len, cfg.seed)
    pos = DataPosition(0, 0)
    log = out / "steps.jsonl"
    for step in range(start, config["steps"]):
        for g in opt.param_groups:
            g["lr"] = lr_at(step, cfg)
        b = order.batch(rank_samples(pos, step, cfg.global_batch_size, rank, world))
        logits = model(b.inputs, b.docs, torch.arange(cfg.seq_len))
        F.cross_entropy(logits.flatten(0, 1), b.targets.flatten()).backward()
        opt.step()
        opt.zero_grad()
        done = step + 1
        if rank == 0:
            with open(log, "a") as f:
                f.write(json.dumps({"step": done, "time": time.time(), "pid": os.getpid()}) + "\n")
        if done % cfg.checkpoint_interval_steps == 0:
            path = out / "ckpts" / f"step-{done:06d}"
            msd, osd = get_state_dict(model, opt)
            dcp.save({"model": msd, "optim": osd, "step": done}, checkpoint_id=str(path))
            ray.train.report({"step": done},
                             checkpoint=ray.train.Checkpoint.from_directory(str(path)) if rank == 0 else None)


def ray_train_run(runs_dir: Path) -> dict[str, float]:
    import ray
    from ray.train import FailureConfig, RunConfig, ScalingConfig
    from ray.train.torch import TorchConfig, TorchTrainer

    from orchestrator.controller.trainer_config import trainer_config
    from orchestrator.spec import load_job_file

    spec = load_job_file(REPO / "examples" / "job.yaml")
    out = runs_dir / "out"
    (out / "ckpts").mkdir(parents=True)
    ray.init(address="local", num_cpus=6, include_dashboard=False, logging_level="WARNING", log_to_driver=False,
             runtime_env={"env_vars": {"PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}})
    trainer = TorchTrainer(
        train_loop,
        train_loop_config={"trainer": trainer_config(spec), "out": str(out), "steps": STEPS},
        torch_config=TorchConfig(backend="gloo"),
        scaling_config=ScalingConfig(num_workers=spec.world_size, use_gpu=False),
        run_config=RunConfig(name="rt", storage_path=str(runs_dir / "storage"),
                             failure_config=FailureConfig(max_failures=1)),
    )
    result: dict = {}
    th = threading.Thread(target=lambda: result.setdefault("r", trainer.fit()), daemon=True)
    th.start()
    log = out / "steps.jsonl"

    def rows() -> list[dict]:
        return [json.loads(x) for x in log.read_text().splitlines() if x.strip()] if log.exists() else []

    try:
        deadline = time.time() + 600
        while not any(r["step"] >= KILL_AFTER_STEP for r in rows()):
            if time.time() > deadline:
                raise RuntimeError("Ray Train did not reach the kill step")
            time.sleep(0.1)
        pid = int((out / "pid-1").read_text())
        killed = time.time()
        os.kill(pid, signal.SIGKILL)
        old_pid = rows()[-1]["pid"]
        while True:
            after = [r for r in rows() if r["time"] > killed and r["pid"] != old_pid]
            if after:
                return {"fault_to_resume_s": after[0]["time"] - killed}
            if time.time() > deadline:
                raise RuntimeError("Ray Train did not resume")
            time.sleep(0.1)
    finally:
        ray.shutdown()


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=3)
    args = ap.parse_args()
    ours, cold, theirs = [], [], []
    for _ in range(args.runs):
        with tempfile.TemporaryDirectory() as t:
            theirs.append(ray_train_run(Path(t))["fault_to_resume_s"])
        with tempfile.TemporaryDirectory() as t:
            ours.append(one_run("kill", Path(t), warm_standby=True)["fault_to_resume_s"])
        with tempfile.TemporaryDirectory() as t:
            cold.append(one_run("kill", Path(t), warm_standby=False)["fault_to_resume_s"])
        print(f"ray train {theirs[-1]:.2f} s, ours {ours[-1]:.2f} s, ours without warm standby {cold[-1]:.2f} s",
              flush=True)
    m_ours, m_cold, m_theirs = median(ours), median(cold), median(theirs)
    print(f"median fault->resume: ours {m_ours:.2f} s (without warm standby {m_cold:.2f} s), "
          f"Ray Train {m_theirs:.2f} s, ratio {m_ours / m_theirs:.3f}")
    print(save("ray_train_restart", {"ours_s": ours, "ours_cold_s": cold, "ray_train_s": theirs,
                                      "median_ours_s": m_ours, "median_ours_cold_s": m_cold,
                                      "median_ray_train_s": m_theirs, "ratio": m_ours / m_theirs,
                                      "ratio_cold": m_cold / m_theirs,
                                      "fault": "SIGKILL of rank 1 after step 30", "job": "examples/job.yaml"}))


if __name__ == "__main__":
    main()
