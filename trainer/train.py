"""The training loop: build, resume, step, checkpoint, report.

`train(cfg, ctx)` runs on every rank. It owns no process management: the
caller provides the rank and the rendezvous through the environment
(MASTER_ADDR/MASTER_PORT), plus callbacks for beacons and a stop flag.
"""

from __future__ import annotations

import contextlib
import dataclasses
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

from trainer.checkpoint import Checkpointer, CheckpointSaveError, SaveTimings, committed_checkpoints
from trainer.config import TrainConfig
from trainer.context_parallel import gathered_indices, zigzag_indices
from trainer.data import Batch, DataPosition, SampleOrder, load_token_stream, rank_samples
from trainer.grad import clip_grad_norm
from trainer.hf import load_hf_into
from trainer.integrity import EXIT_SDC, MAX_ROLLBACKS, LossGuard, check_replicas
from trainer.model import Transformer
from trainer.parallel_dims import ParallelDims
from trainer.parallelize import assign_shard, parallelize_model
from trainer.pipeline import build_schedule, local_stages, trim_to_stages
from trainer.progress import RankProgress, StepReadiness
from trainer.rendezvous import wait_for_store
from trainer.snapshot import Snapshotter
from trainer.snapshot_files import layout_key

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
    """metrics.jsonl is appended here (by rank 0; see `metrics_file`)."""
    checkpoint_dir: Path
    attempt: int = 1
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))
    beacon: Beacon = _no_beacon
    stop: threading.Event = field(default_factory=threading.Event)
    before_step: Callable[[int], None] | None = None
    """Called before each step (fault injection hooks in here)."""
    injected: Callable[[str], bool] | None = None
    """Fault injection: True once for each new request of a kind ("sdc": this rank's next check result is
    perturbed; "nan": this rank's next batch is poisoned)."""
    fault_point: Callable[[str], None] | None = None
    """Called at named points of every step (step, forward, backward, collective, p2p): a stall hooks in here."""
    progress: RankProgress = field(default_factory=RankProgress)
    """Pipeline P2P counters and the rank's place in the step, read by the beacon thread."""
    sample_log: Path | None = None
    """If set, ranks at tp=cp=pp=0 append the sample ids of every step here (audits)."""
    metrics_file: str | None = None
    """This rank's step-row file in `run_dir`; None: metrics.jsonl for rank 0, none for the others. Every row
    is global (the loss is all-reduced), so a rank on another host can keep a copy that outlives rank 0's."""


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
    if ctx.rank != 0 and os.environ.get("MASTER_ADDR") and os.environ.get("MASTER_PORT"):
        wait_for_store(os.environ["MASTER_ADDR"], int(os.environ["MASTER_PORT"]), timeout_s)
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
                init_from: Path | None = None, *, meta_init: bool = True,
                progress: RankProgress | None = None, fault_point: Callable[[str], None] | None = None
                ) -> ModelParts:
    """Build, cut into pipeline stages, parallelize, and (for pp) wrap in a schedule.

    With `meta_init` the model is built on the meta device and only this rank's
    shards (of its stage's layers) are allocated, after parallelising; without it
    the whole model (or stage) is built and initialised on the CPU first, as before
    (kept for the memory benchmark). Both start from the same values. `init_from`
    (a Hugging Face Llama folder) replaces the seeded weights before parallelising,
    so every layout reads the same full tensors it then shards: it takes the full build.
    """
    meta_init = meta_init and init_from is None
    with torch.device("meta") if meta_init else contextlib.nullcontext():
        model = Transformer(cfg.model)
    p = cfg.parallel
    n_stages = dims.pp * p.stages_per_rank
    stage_ids = local_stages(dims.coords(dist.get_rank())["pp"], dims.pp, p.stages_per_rank) if dims.pp > 1 else [0]
    layer_ids = trim_to_stages(model, stage_ids, n_stages) if dims.pp > 1 else None
    param_dtype = torch.bfloat16 if cfg.dtype == "bfloat16" else torch.float32
    if meta_init:
        parallelize_model(model, mesh, param_dtype=param_dtype, pipelined=dims.pp > 1)
        materialize(model, device, cfg.seed)
    else:
        # Initialise after trimming: weights depend only on the parameter name and seed.
        model.init_weights(cfg.seed)
        if init_from is not None:
            n = load_hf_into(model, init_from)
            logger.info("rank %d: %d tensors from %s", dist.get_rank(), n, init_from)
        model.to(device)
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


def start_weights(cfg: TrainConfig, ctx: RunContext) -> Path | None:
    """`cfg.init_from` for a job with no committed checkpoint yet, else None (the checkpoint wins).

    Rank 0's view of the checkpoint folder decides for every rank, as in `Checkpointer.load_latest`.
    """
    if cfg.init_from is None:
        return None
    box = [bool(committed_checkpoints(ctx.checkpoint_dir))]
    if dist.get_world_size() > 1:
        dist.broadcast_object_list(box, src=0)
    return None if box[0] else Path(cfg.init_from)


def materialize(model: Transformer, device: torch.device, seed: int) -> None:
    """Allocate a meta-device model's (already parallelised) parameters on `device` and initialise them."""
    model.to_empty(device=device)
    model.init_weights(seed, assign=assign_shard)


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


def forward_backward(parts: ModelParts, b: LocalBatch, micro_batch_size: int,
                     poison: bool = False) -> torch.Tensor:
    """Run forward and backward over the local batch; returns this rank's mean loss (0 off the last stage).

    `poison`: the batch's loss (and so its gradients) turns NaN, as a corrupt sample would make it."""
    if parts.schedule is None:
        n_micro = b.inputs.shape[0] // micro_batch_size
        total = torch.zeros((), device=b.inputs.device)
        for mb in range(n_micro):
            sl = slice(mb * micro_batch_size, (mb + 1) * micro_batch_size)
            logits = parts.model(b.inputs[sl], b.docs[sl], b.positions, b.kv_docs[sl], b.kv_positions)
            loss = lm_loss(logits, b.targets[sl]) / n_micro
            if poison:
                loss = loss * float("nan")
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
        out = torch.stack([x.detach() for x in losses]).mean()
        return out * float("nan") if poison else out
    return torch.zeros((), device=b.inputs.device)


def check_checksum(parts: ModelParts, b: LocalBatch, micro_batch_size: int, perturb: bool = False) -> float:
    """A float64 checksum of the logits of a fixed batch: the same on every replica of a healthy job."""
    sl = slice(0, micro_batch_size)
    with torch.no_grad():
        logits = parts.model(b.inputs[sl], b.docs[sl], b.positions, b.kv_docs[sl], b.kv_positions).double()
    if perturb:  # injected: this rank's arithmetic goes wrong once, as a faulty GPU's would
        logits = logits + 1e-3 * logits.abs().mean()
    weights = torch.arange(1, logits.shape[-1] + 1, dtype=torch.float64, device=logits.device)
    return float((logits * weights).sum())


class StartupClock:
    """Wall time of the phases before a rank's first step, for its log: what a restart spends where."""

    def __init__(self) -> None:
        self._t = self._t0 = time.perf_counter()
        self.laps: list[tuple[str, float]] = []

    def lap(self, name: str) -> None:
        now = time.perf_counter()
        self.laps.append((name, now - self._t))
        self._t = now

    def __str__(self) -> str:
        return f"{self._t - self._t0:.2f} s (" + ", ".join(f"{n} {s:.2f}" for n, s in self.laps) + ")"


class MetricsWriter:
    """Appends one JSON object per completed step to the rank's step-row file (`RunContext.metrics_file`)."""

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
    ready = StartupClock()
    init_distributed(ctx, cfg.collective_timeout_s)
    ready.lap("process group")
    p = cfg.parallel
    dims = ParallelDims(dp=p.dp, tp=p.tp, pp=p.pp, cp=p.cp, world_size=dist.get_world_size())
    mesh = dims.build_mesh(ctx.device.type)
    coords = dims.coords(dist.get_rank())
    ready.lap("mesh")

    def point(name: str) -> None:
        ctx.progress.mark(name)
        if ctx.fault_point is not None:
            ctx.fault_point(name)

    parts = build_model(cfg, dims, mesh, ctx.device, init_from=start_weights(cfg, ctx),
                        progress=ctx.progress, fault_point=point)
    model = parts.model
    install_step_points(model, point)
    ready.lap("model")
    ctx.beacon({"layout": dict(zip(("dp", "pp", "cp", "tp"), dims.shape, strict=True)),
                "groups": mesh.group_members()})
    optimizer = torch.optim.AdamW(model.parameters(), lr=cfg.optim.lr_peak,
                                  weight_decay=cfg.optim.weight_decay, betas=(0.9, 0.95))
    run_dir = Path(ctx.run_dir)
    name = ctx.metrics_file or ("metrics.jsonl" if ctx.rank == 0 else None)
    metrics = MetricsWriter(run_dir / name if name else None)

    def on_commit(step: int, path: Path, t: SaveTimings) -> None:
        ctx.beacon({"phase": "checkpoint_committed", "checkpoint_step": step,
                    "checkpoint_path": str(path), "checkpoint_blocked_s": t.blocked_s,
                    "checkpoint_seconds": (t.finished_at or time.time()) - t.started_at,
                    "checkpoint_consecutive_failures": 0})

    def on_failure(step: int, error: str, failures: int, consecutive: int) -> None:
        # Not a phase: a failed save does not stop training, the next interval tries again.
        ctx.beacon({"checkpoint_failures": failures, "checkpoint_error": error, "checkpoint_failed_step": step,
                    "checkpoint_consecutive_failures": consecutive})

    ckpt = Checkpointer(ctx.checkpoint_dir, keep_last=cfg.checkpoint_keep_last,
                        async_save=cfg.checkpoint_async, rank=ctx.rank, attempt=ctx.attempt,
                        on_commit=on_commit, on_failure=on_failure)
    extra: dict[str, Any] = {"step": 0, "sample": 0}
    snap = snapshotter(cfg, dims, ctx)
    ready.lap("snapshot group")
    # A snapshot newer than the newest checkpoint that every rank holds wins; else the checkpoint.
    from_snap = snap.resume(model, optimizer, extra, ctx.checkpoint_dir) if snap is not None else None
    # Raises CheckpointLoadError when committed checkpoints exist and none loads: never start over.
    info = ckpt.load_latest(model, optimizer, extra) if from_snap is None else None
    start = int(extra["step"])
    pos = DataPosition(step=start, sample=int(extra["sample"]))
    if snap is not None:
        snap.drop_after(start)
    if from_snap is not None:
        ctx.beacon({"phase": "resumed", "step": start, "resumed_from": start,
                    "resumed": {"kind": "snapshot", "step": start, "path": str(from_snap.path)}})
        logger.info("rank %d resumed from snapshot %s at step %d", ctx.rank, from_snap.path, start)
    elif info is not None:
        ctx.beacon({"phase": "resumed", "step": start, "resumed_from": info.step,
                    "resumed": {"kind": "checkpoint", "step": info.step, "path": str(info.path)}})
        logger.info("rank %d resumed from %s at step %d", ctx.rank, info.path, start)

    ready.lap("resume")
    stream = load_token_stream(cfg.data_paths, cfg.data_max_bytes)
    order = SampleOrder(stream, cfg.seq_len, cfg.seed)
    ready.lap("data")
    logger.info("rank %d ready to train from step %d in %s", ctx.rank, int(extra["step"]), ready)
    tokens_per_step = cfg.global_batch_size * cfg.seq_len
    loss_val: float | None = None
    readiness = StepReadiness()
    stopped = False
    step = start
    guard = LossGuard(cfg.loss_spike_factor)
    rollbacks = 0
    sdc_every = cfg.sdc_check_interval_steps if dims.dp > 1 and dims.pp == 1 else 0
    if cfg.sdc_check_interval_steps and not sdc_every and ctx.rank == 0:
        logger.warning("SDC check off: it needs dp > 1 and pp == 1 (dp=%d, pp=%d)", dims.dp, dims.pp)
    check_batch = local_batch(order.batch(list(range(cfg.micro_batch_size))), dims, coords["cp"], ctx.device) \
        if sdc_every else None
    dp_group = mesh["dp"].get_group() if sdc_every else None

    def injected(kind: str) -> bool:
        return ctx.injected is not None and ctx.injected(kind)

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
        local_loss = forward_backward(parts, batch, cfg.micro_batch_size, poison=injected("nan"))
        point("collective")
        grad_norm = clip_grad_norm(model.parameters(), cfg.optim.grad_clip_norm, dp_cp=dims.dp * dims.cp,
                                   tp=dims.tp, device=ctx.device)
        ckpt.wait_staging()  # an async save may still be copying the parameters
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        step += 1
        loss_val = global_loss(local_loss, dims)
        compute_s = time.perf_counter() - t0
        why = guard.bad(loss_val)
        if why is not None:
            rollbacks += 1
            pos, step = rollback(ckpt, model, optimizer, cfg, step, why, rollbacks, ctx)
            if snap is not None:
                snap.drop_after(step)
            loss_val = None
            guard.reset()
            continue
        if sdc_every and step % sdc_every == 0:
            assert check_batch is not None
            ctx.beacon({"phase": "sdc_check"})  # a replay may double its time: the hang limit allows for it
            v = check_replicas(lambda: check_checksum(parts, check_batch, cfg.micro_batch_size, injected("sdc")),
                               dp_group)
            if not v.ok:
                stopped = sdc_failed(v, coords["dp"], step, ctx, cfg.collective_timeout_s)
                if stopped:
                    break

        if step % cfg.checkpoint_interval_steps == 0 or step == cfg.steps:
            extra = {"step": step, "sample": pos.sample + (step - pos.step) * cfg.global_batch_size}
            layout = dict(zip(("dp", "pp", "cp", "tp"), dims.shape, strict=True))
            meta = {"world_size": dims.world_size, "layout": layout, "attempt": ctx.attempt}
            # `saving_step` stays in the beacon: this step and the next (which waits for the staging) are
            # judged against save steps by the hang detector.
            ctx.beacon({"phase": "checkpoint", "step": step, "saving_step": step})
            ckpt.save(step, model, optimizer, extra, meta)
        else:
            ckpt.poll()
        snapshot_s = 0.0
        if snap is not None and step % cfg.snapshot_interval_steps == 0 and step < cfg.steps:
            extra = {"step": step, "sample": pos.sample + (step - pos.step) * cfg.global_batch_size}
            snapshot_s = snap.save(step, model, optimizer, extra)
        blocked = ckpt.take_blocked_seconds()
        step_s = time.perf_counter() - t0
        row = {"step": step, "loss": loss_val, "tokens": tokens_per_step, "step_seconds": step_s,
               "attempt": ctx.attempt, "time": time.time(), "lr": lr, "grad_norm": grad_norm,
               "tokens_per_second": tokens_per_step / step_s if step_s > 0 else 0.0,
               "checkpoint_blocked_seconds": blocked, "snapshot_seconds": snapshot_s}
        metrics.write(row)
        ctx.beacon({"phase": "train", "step": step, "step_seconds": step_s,
                    "compute_seconds": compute_s, "loss": loss_val,
                    "tokens_per_second": row["tokens_per_second"], "max_rss_mb": max_rss_mb(),
                    "ready": readiness.snapshot(),
                    "snapshot_step": snap.last_step if snap is not None else None,
                    "snapshots": snap.stats() if snap is not None else None})
    ckpt.close()
    metrics.close()
    if snap is not None:
        snap.close()
    if snap is not None and not stopped and step == cfg.steps and ckpt.last_saved == (step, True):
        snap.clear()  # the final checkpoint holds everything now
    if not stopped and step == cfg.steps and ckpt.last_saved == (step, False):
        # The run's result exists only in memory: fail so that the attempt is retried from the last commit.
        raise CheckpointSaveError(f"final checkpoint of step {step} was not committed: {ckpt.last_error}")
    ctx.beacon({"phase": "stopped" if stopped else "done", "step": step, "loss": loss_val})
    return TrainResult(first_step=start + 1, last_step=step,
                       resumed_from=from_snap.step if from_snap is not None else None if info is None else info.step,
                       stopped=stopped, final_loss=loss_val)


def snapshotter(cfg: TrainConfig, dims: ParallelDims, ctx: RunContext) -> Snapshotter | None:
    """This rank's snapshots, when the job takes them; their key is everything that must match to load one."""
    if not cfg.snapshot_interval_steps or not cfg.snapshot_dir:
        return None
    key = layout_key({"world": dims.world_size, "shape": dims.shape, "parallel": dataclasses.asdict(cfg.parallel),
                      "model": dataclasses.asdict(cfg.model), "dtype": cfg.dtype, "seed": cfg.seed,
                      "global_batch_size": cfg.global_batch_size, "seq_len": cfg.seq_len})
    group = dist.new_group(backend="gloo") if dist.get_world_size() > 1 else None
    return Snapshotter(cfg.snapshot_dir, ctx.rank, key, group=group, background=cfg.snapshot_async)


def rollback(ckpt: Checkpointer, model: torch.nn.Module, optimizer: torch.optim.Optimizer, cfg: TrainConfig,
             step: int, why: str, count: int, ctx: RunContext) -> tuple[DataPosition, int]:
    """Back to the newest committed checkpoint, skipping the batches since it (PaLM's remedy for spikes).

    The loss is all-reduced, so every replica sees the same bad value and takes the same decision."""
    if count > MAX_ROLLBACKS:
        raise FloatingPointError(f"{why} at step {step}: {count - 1} rollbacks did not help")
    ckpt.wait()
    extra: dict[str, Any] = {"step": 0, "sample": 0}
    info = ckpt.load_latest(model, optimizer, extra)
    if info is None:
        raise FloatingPointError(f"{why} at step {step} and there is no committed checkpoint to roll back to")
    skipped = step - info.step
    pos = DataPosition(step=info.step, sample=int(extra["sample"]) + skipped * cfg.global_batch_size)
    logger.error("loss guard: %s at step %d (the same on every replica: not hardware): rolled back to checkpoint "
                 "step %d and skipping the %d batches since it", why, step, info.step, skipped)
    ctx.beacon({"phase": "rollback", "step": info.step,
                "rollback": {"count": count, "at_step": step, "to_step": info.step, "skipped_batches": skipped,
                             "reason": why, "time": time.time()}})
    return pos, info.step


def sdc_failed(v: Any, dp_rank: int, step: int, ctx: RunContext, wait_s: float) -> bool:
    """Act on a failed SDC check: the named replica exits with EXIT_SDC; the others wait to be stopped."""
    if not v.culprits:
        logger.warning("SDC check at step %d inconclusive: %s (checksums %s, replay %s)", step, v.message,
                       v.values, v.replay)
        return False
    agreed = next(x for i, x in enumerate(v.replay) if i not in v.culprits)
    if dp_rank in v.culprits:
        line = (f"silent data corruption detected at step {step}: replica dp={dp_rank} (rank {ctx.rank}) disagrees "
                f"with the other replicas on the check computation over the gathered parameters (checksum "
                f"{v.values[dp_rank]!r} vs {agreed!r}), and a replay on the other replicas' hosts agrees with them")
        logger.error(line)
        ctx.beacon({"phase": "sdc", "step": step, "sdc": {"replica": dp_rank, "rank": ctx.rank, "step": step,
                                                          "values": list(v.values), "replay": list(v.replay)}})
        for h in logging.getLogger().handlers:
            h.flush()
        os._exit(EXIT_SDC)  # at once: no checkpoint or teardown from a replica that computes wrong results
    logger.error("SDC check at step %d: replica(s) dp=%s disagree with this one; waiting to be stopped", step,
                 list(v.culprits))
    ctx.beacon({"phase": "sdc", "step": step, "sdc": {"replica": list(v.culprits), "step": step}})
    ctx.stop.wait(wait_s)
    return True


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
