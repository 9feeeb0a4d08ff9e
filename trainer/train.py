"""The training loop: build, resume, step, checkpoint, report.

`train(cfg, ctx)` runs on every rank. It owns no process management: the
caller provides the rank and the rendezvous through the environment
(MASTER_ADDR/MASTER_PORT), plus callbacks for beacons and a stop flag.
"""

from __future__ import annotations

import json
import logging
import math
import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
import torch.nn.functional as F

from trainer.checkpoint import Checkpointer, SaveTimings
from trainer.config import TrainConfig
from trainer.data import DataPosition, SampleOrder, load_token_stream, rank_samples
from trainer.model import Transformer
from trainer.parallel_dims import ParallelDims
from trainer.parallelize import parallelize_model

logger = logging.getLogger(__name__)

Beacon = Callable[[dict[str, Any]], None]


def _no_beacon(_: dict[str, Any]) -> None:
    return None


@dataclass(kw_only=True)
class RunContext:
    """What the caller tells one rank about where and how it runs."""

    rank: int
    world_size: int
    local_rank: int = 0
    run_dir: Path
    """metrics.jsonl is appended here (by rank 0)."""
    checkpoint_dir: Path
    attempt: int = 1
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))
    beacon: Beacon = _no_beacon
    stop: threading.Event = field(default_factory=threading.Event)
    before_step: Callable[[int], None] | None = None
    """Called before each step (fault injection hooks in here)."""


@dataclass(slots=True)
class TrainResult:
    first_step: int
    last_step: int
    resumed_from: int | None
    stopped: bool
    final_loss: float | None


def lr_at(step: int, cfg: TrainConfig) -> float:
    """Linear warmup to the peak, then cosine decay to lr_min at the last step."""
    o = cfg.optim
    if o.warmup_steps and step < o.warmup_steps:
        return o.lr_peak * (step + 1) / o.warmup_steps
    if o.lr_schedule == "constant":
        return o.lr_peak
    span = max(1, cfg.steps - o.warmup_steps)
    frac = min(1.0, (step - o.warmup_steps) / span)
    return o.lr_min + 0.5 * (o.lr_peak - o.lr_min) * (1 + math.cos(math.pi * frac))


def init_distributed(ctx: RunContext, timeout_s: float) -> None:
    if dist.is_initialized():
        return
    backend = "nccl" if ctx.device.type == "cuda" else "gloo"
    dist.init_process_group(backend=backend, rank=ctx.rank, world_size=ctx.world_size,
                            timeout=timedelta(seconds=timeout_s))


def build_model(cfg: TrainConfig, dims: ParallelDims, mesh: Any, device: torch.device) -> Transformer:
    model = Transformer(cfg.model)
    model.init_weights(cfg.seed)
    model.to(device)
    param_dtype = torch.bfloat16 if cfg.dtype == "bfloat16" else torch.float32
    parallelize_model(model, mesh, param_dtype=param_dtype, pipelined=dims.pp > 1)
    return model


class MetricsWriter:
    """Appends one JSON object per completed step to metrics.jsonl (rank 0 only)."""

    def __init__(self, path: Path | None) -> None:
        self._f = open(path, "a", buffering=1) if path is not None else None  # noqa: SIM115

    def write(self, row: dict[str, Any]) -> None:
        if self._f is not None:
            self._f.write(json.dumps(row) + "\n")

    def close(self) -> None:
        if self._f is not None:
            self._f.close()


def train(cfg: TrainConfig, ctx: RunContext) -> TrainResult:
    """Train `cfg.steps` steps, resuming from the newest committed checkpoint."""
    torch.manual_seed(cfg.seed)
    ctx.beacon({"phase": "init", "step": 0})
    init_distributed(ctx, cfg.collective_timeout_s)
    p = cfg.parallel
    dims = ParallelDims(dp=p.dp, tp=p.tp, pp=p.pp, cp=p.cp, world_size=dist.get_world_size())
    mesh = dims.build_mesh(ctx.device.type)
    coords = dims.coords(dist.get_rank())
    model = build_model(cfg, dims, mesh, ctx.device)
    optimizer = torch.optim.AdamW(model.parameters(), lr=cfg.optim.lr_peak,
                                  weight_decay=cfg.optim.weight_decay, betas=(0.9, 0.95))
    run_dir = Path(ctx.run_dir)
    metrics = MetricsWriter(run_dir / "metrics.jsonl" if ctx.rank == 0 else None)
    stall = {"s": 0.0}

    def on_commit(step: int, path: Path, t: SaveTimings) -> None:
        ctx.beacon({"phase": "checkpoint_committed", "checkpoint_step": step,
                    "checkpoint_path": str(path), "checkpoint_blocked_s": t.blocked_s,
                    "checkpoint_seconds": (t.finished_at or time.time()) - t.started_at})

    ckpt = Checkpointer(ctx.checkpoint_dir, keep_last=cfg.checkpoint_keep_last,
                        async_save=cfg.checkpoint_async, rank=ctx.rank, on_commit=on_commit)
    extra: dict[str, Any] = {"step": 0, "sample": 0}
    info = ckpt.load_latest(model, optimizer, extra)
    start = int(extra["step"])
    pos = DataPosition(step=start, sample=int(extra["sample"]))
    if info is not None:
        ctx.beacon({"phase": "resumed", "step": start, "resumed_from": info.step})
        logger.info("rank %d resumed from %s at step %d", ctx.rank, info.path, start)

    stream = load_token_stream(cfg.data_paths, cfg.data_max_bytes)
    order = SampleOrder(stream, cfg.seq_len, cfg.seed)
    dp_cp_group = mesh["dp_cp"].get_group()
    tokens_per_step = cfg.global_batch_size * cfg.seq_len
    n_micro = cfg.global_batch_size // p.dp // cfg.micro_batch_size
    loss_val: float | None = None
    stopped = False
    step = start
    while step < cfg.steps:
        if ctx.stop.is_set():
            stopped = True
            break
        if ctx.before_step is not None:
            ctx.before_step(step + 1)
        t0 = time.perf_counter()
        lr = lr_at(step, cfg)
        for g in optimizer.param_groups:
            g["lr"] = lr
        samples = rank_samples(pos, step, cfg.global_batch_size, coords["dp"], p.dp)
        batch = order.batch(samples)
        local_loss = torch.zeros((), device=ctx.device)
        positions = torch.arange(cfg.seq_len, device=ctx.device)
        for mb in range(n_micro):
            sl = slice(mb * cfg.micro_batch_size, (mb + 1) * cfg.micro_batch_size)
            inputs = batch.inputs[sl].to(ctx.device)
            targets = batch.targets[sl].to(ctx.device)
            docs = batch.docs[sl].to(ctx.device)
            logits = model(inputs, docs, positions)
            loss = F.cross_entropy(logits.flatten(0, 1), targets.flatten()) / n_micro
            loss.backward()
            local_loss += loss.detach()
        grad_norm = torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.optim.grad_clip_norm)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        step += 1
        if dims.dp * dims.cp > 1:
            dist.all_reduce(local_loss, op=dist.ReduceOp.AVG, group=dp_cp_group)
        loss_val = float(local_loss)
        compute_s = time.perf_counter() - t0

        blocked = 0.0
        if step % cfg.checkpoint_interval_steps == 0 or step == cfg.steps:
            extra = {"step": step, "sample": pos.sample + (step - pos.step) * cfg.global_batch_size}
            layout = dict(zip(("dp", "pp", "cp", "tp"), dims.shape, strict=True))
            meta = {"world_size": dims.world_size, "layout": layout, "attempt": ctx.attempt}
            blocked = ckpt.save(step, model, optimizer, extra, meta).blocked_s
            stall["s"] += blocked
        else:
            ckpt.poll()
        step_s = time.perf_counter() - t0
        gn = grad_norm.full_tensor() if hasattr(grad_norm, "full_tensor") else grad_norm
        row = {"step": step, "loss": loss_val, "tokens": tokens_per_step, "step_seconds": step_s,
               "attempt": ctx.attempt, "time": time.time(), "lr": lr, "grad_norm": float(gn),
               "tokens_per_second": tokens_per_step / step_s if step_s > 0 else 0.0,
               "checkpoint_blocked_seconds": blocked}
        metrics.write(row)
        ctx.beacon({"phase": "train", "step": step, "step_seconds": step_s,
                    "compute_seconds": compute_s, "loss": loss_val,
                    "tokens_per_second": row["tokens_per_second"]})
    ckpt.wait()
    metrics.close()
    ctx.beacon({"phase": "stopped" if stopped else "done", "step": step, "loss": loss_val})
    return TrainResult(first_step=start + 1, last_step=step,
                       resumed_from=None if info is None else info.step,
                       stopped=stopped, final_loss=loss_val)


def shutdown() -> None:
    if dist.is_initialized():
        dist.destroy_process_group()


def configure_threads(cpus: float) -> None:
    n = max(1, int(cpus))
    torch.set_num_threads(n)
    os.environ.setdefault("OMP_NUM_THREADS", str(n))
