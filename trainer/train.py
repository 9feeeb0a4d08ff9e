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
from trainer.context_parallel import gathered_indices, zigzag_indices
from trainer.data import Batch, DataPosition, SampleOrder, load_token_stream, rank_samples
from trainer.grad import clip_grad_norm
from trainer.model import Transformer
from trainer.parallel_dims import ParallelDims
from trainer.parallelize import parallelize_model
from trainer.pipeline import build_schedule, local_stages, trim_to_stages
from trainer.progress import RankProgress, StepReadiness

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
    fault_point: Callable[[str], None] | None = None
    """Called at named points of every step (step, forward, backward, collective, p2p): a stall hooks in here."""
    progress: RankProgress = field(default_factory=RankProgress)
    """Pipeline P2P counters and the rank's place in the step, read by the beacon thread."""
    sample_log: Path | None = None
    """If set, ranks at tp=cp=pp=0 append the sample ids of every step here (audits)."""


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


@dataclass
class ModelParts:
    """The rank's model (only its layers under pipelining) and how to run a step on it."""

    model: Transformer
    schedule: Any = None
    """A pipeline schedule when pp > 1."""
    has_first_stage: bool = True
    has_last_stage: bool = True


def build_model(cfg: TrainConfig, dims: ParallelDims, mesh: Any, device: torch.device,
                progress: RankProgress | None = None, fault_point: Callable[[str], None] | None = None
                ) -> ModelParts:
    """Build, cut into pipeline stages, parallelize, and (for pp) wrap in a schedule."""
    model = Transformer(cfg.model)
    p = cfg.parallel
    n_stages = dims.pp * p.stages_per_rank
    stage_ids = local_stages(dims.coords(dist.get_rank())["pp"], dims.pp, p.stages_per_rank) if dims.pp > 1 else [0]
    layer_ids = trim_to_stages(model, stage_ids, n_stages) if dims.pp > 1 else None
    # Initialise after trimming: weights depend only on the parameter name and seed.
    model.init_weights(cfg.seed)
    model.to(device)
    param_dtype = torch.bfloat16 if cfg.dtype == "bfloat16" else torch.float32
    parallelize_model(model, mesh, param_dtype=param_dtype, pipelined=dims.pp > 1)
    parts = ModelParts(model)
    if dims.pp > 1:
        assert layer_ids is not None
        parts.schedule = build_schedule(model, stage_ids, layer_ids, n_stages, schedule=p.schedule,
                                        n_microbatches=p.microbatches or dims.pp, loss_fn=lm_loss,
                                        device=device, group=mesh["pp"].get_group(), progress=progress,
                                        fault_point=fault_point)
        parts.has_first_stage = 0 in stage_ids
        parts.has_last_stage = n_stages - 1 in stage_ids
    return parts


def install_step_points(model: Transformer, point: Callable[[str], None]) -> None:
    """Call `point("forward")` as the rank's forward starts and `point("backward")` as its backward does."""
    keys = list(model.layers.keys())
    if not keys:
        return

    def on_backward(grad: torch.Tensor) -> None:
        point("backward")

    def after_last_layer(_mod: Any, _args: Any, out: Any) -> None:
        if isinstance(out, torch.Tensor) and out.requires_grad:
            out.register_hook(on_backward)

    model.layers[keys[0]].register_forward_pre_hook(lambda *_: point("forward"))
    model.layers[keys[-1]].register_forward_hook(after_last_layer)


def lm_loss(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    return F.cross_entropy(logits.flatten(0, 1).float(), targets.flatten())


@dataclass(frozen=True, slots=True)
class LocalBatch:
    """This rank's slice of the step: its dp rows and (under cp) its zigzag tokens."""

    inputs: torch.Tensor
    targets: torch.Tensor
    docs: torch.Tensor
    positions: torch.Tensor
    kv_docs: torch.Tensor
    kv_positions: torch.Tensor


def local_batch(batch: Batch, dims: ParallelDims, cp_rank: int, device: torch.device) -> LocalBatch:
    seq = batch.inputs.shape[1]
    if dims.cp == 1:
        pos = torch.arange(seq)
        return LocalBatch(batch.inputs.to(device), batch.targets.to(device), batch.docs.to(device),
                          pos.to(device), batch.docs.to(device), pos.to(device))
    idx = zigzag_indices(seq, dims.cp, cp_rank)
    kv_idx = gathered_indices(seq, dims.cp)
    return LocalBatch(batch.inputs[:, idx].to(device), batch.targets[:, idx].to(device),
                      batch.docs[:, idx].to(device), idx.to(device), batch.docs[:, kv_idx].to(device),
                      kv_idx.to(device))


def forward_backward(parts: ModelParts, b: LocalBatch, micro_batch_size: int) -> torch.Tensor:
    """Run forward and backward over the local batch; returns this rank's mean loss (0 off the last stage)."""
    if parts.schedule is None:
        n_micro = b.inputs.shape[0] // micro_batch_size
        total = torch.zeros((), device=b.inputs.device)
        for mb in range(n_micro):
            sl = slice(mb * micro_batch_size, (mb + 1) * micro_batch_size)
            logits = parts.model(b.inputs[sl], b.docs[sl], b.positions, b.kv_docs[sl], b.kv_positions)
            loss = lm_loss(logits, b.targets[sl]) / n_micro
            loss.backward()
            total += loss.detach()
        return total
    rows = b.inputs.shape[0]
    # Pipelining splits every input along the batch, so per-token ids travel as rows.
    kwargs = {"docs": b.docs, "positions": b.positions.expand(rows, -1),
              "kv_docs": b.kv_docs, "kv_positions": b.kv_positions.expand(rows, -1)}
    losses: list[torch.Tensor] = []
    args = (b.inputs,) if parts.has_first_stage else ()
    target = b.targets if parts.has_last_stage else None
    parts.schedule.step(*args, target=target, losses=losses if parts.has_last_stage else None, **kwargs)
    if parts.has_last_stage:
        return torch.stack([x.detach() for x in losses]).mean()
    return torch.zeros((), device=b.inputs.device)


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

    def point(name: str) -> None:
        ctx.progress.mark(name)
        if ctx.fault_point is not None:
            ctx.fault_point(name)

    parts = build_model(cfg, dims, mesh, ctx.device, progress=ctx.progress, fault_point=point)
    model = parts.model
    install_step_points(model, point)
    ctx.beacon({"layout": dict(zip(("dp", "pp", "cp", "tp"), dims.shape, strict=True)),
                "groups": mesh.group_members()})
    optimizer = torch.optim.AdamW(model.parameters(), lr=cfg.optim.lr_peak,
                                  weight_decay=cfg.optim.weight_decay, betas=(0.9, 0.95))
    run_dir = Path(ctx.run_dir)
    metrics = MetricsWriter(run_dir / "metrics.jsonl" if ctx.rank == 0 else None)

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
    tokens_per_step = cfg.global_batch_size * cfg.seq_len
    loss_val: float | None = None
    readiness = StepReadiness()
    stopped = False
    step = start
    while step < cfg.steps:
        if ctx.stop.is_set():
            stopped = True
            break
        if ctx.before_step is not None:
            ctx.before_step(step + 1)
        point("step")
        t0 = time.perf_counter()
        lr = lr_at(step, cfg)
        for g in optimizer.param_groups:
            g["lr"] = lr
        samples = rank_samples(pos, step, cfg.global_batch_size, coords["dp"], p.dp)
        batch = local_batch(order.batch(samples), dims, coords["cp"], ctx.device)
        readiness.mark(step + 1)
        if ctx.sample_log is not None and coords["tp"] == coords["cp"] == coords["pp"] == 0:
            with open(ctx.sample_log, "a") as f:
                f.write(json.dumps({"step": step + 1, "attempt": ctx.attempt, "dp_rank": coords["dp"],
                                    "samples": samples}) + "\n")
        local_loss = forward_backward(parts, batch, cfg.micro_batch_size)
        point("collective")
        grad_norm = clip_grad_norm(model.parameters(), cfg.optim.grad_clip_norm, dp_cp=dims.dp * dims.cp,
                                   tp=dims.tp, device=ctx.device)
        ckpt.wait_staging()  # an async save may still be copying the parameters
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        step += 1
        loss_val = global_loss(local_loss, dims)
        compute_s = time.perf_counter() - t0

        if step % cfg.checkpoint_interval_steps == 0 or step == cfg.steps:
            extra = {"step": step, "sample": pos.sample + (step - pos.step) * cfg.global_batch_size}
            layout = dict(zip(("dp", "pp", "cp", "tp"), dims.shape, strict=True))
            meta = {"world_size": dims.world_size, "layout": layout, "attempt": ctx.attempt}
            ctx.beacon({"phase": "checkpoint", "step": step})
            ckpt.save(step, model, optimizer, extra, meta)
        else:
            ckpt.poll()
        blocked = ckpt.take_blocked_seconds()
        step_s = time.perf_counter() - t0
        row = {"step": step, "loss": loss_val, "tokens": tokens_per_step, "step_seconds": step_s,
               "attempt": ctx.attempt, "time": time.time(), "lr": lr, "grad_norm": grad_norm,
               "tokens_per_second": tokens_per_step / step_s if step_s > 0 else 0.0,
               "checkpoint_blocked_seconds": blocked}
        metrics.write(row)
        ctx.beacon({"phase": "train", "step": step, "step_seconds": step_s,
                    "compute_seconds": compute_s, "loss": loss_val,
                    "tokens_per_second": row["tokens_per_second"], "max_rss_mb": max_rss_mb(),
                    "ready": readiness.snapshot()})
    ckpt.close()
    metrics.close()
    ctx.beacon({"phase": "stopped" if stopped else "done", "step": step, "loss": loss_val})
    return TrainResult(first_step=start + 1, last_step=step,
                       resumed_from=None if info is None else info.step,
                       stopped=stopped, final_loss=loss_val)


def max_rss_mb() -> float:
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def global_loss(local_loss: torch.Tensor, dims: ParallelDims) -> float:
    """Mean loss over the global batch: only last-stage ranks hold one, tp ranks hold copies."""
    t = local_loss.detach().clone().double()
    if dist.get_world_size() > 1:
        dist.all_reduce(t)
    return float(t) / (dims.dp * dims.cp * dims.tp)


def shutdown() -> None:
    if dist.is_initialized():
        dist.destroy_process_group()


def configure_threads(cpus: float) -> None:
    n = max(1, int(cpus))
    torch.set_num_threads(n)
    os.environ.setdefault("OMP_NUM_THREADS", str(n))
