"""Translate a validated JobSpec into the trainer's own configuration dict."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from orchestrator.spec import JobSpec
from trainer.config import OptimConfig, ParallelConfig, TrainConfig


def trainer_config(spec: JobSpec, *, dp: int | None = None, checkpoint_interval_steps: int | None = None,
                   snapshot_dir: str | None = None, snapshot_interval_steps: int | None = None) -> dict[str, Any]:
    """The trainer config for `spec`; `dp` overrides the data-parallel degree (shrinking),
    `checkpoint_interval_steps` and `snapshot_interval_steps` the save and snapshot intervals (chosen by the
    controller when the interval is `auto`), and `snapshot_dir` the node-local folder of the job's in-memory
    snapshots (none: no snapshots)."""
    m, p, t, c = spec.model, spec.parallelism, spec.training, spec.checkpoint
    cfg = TrainConfig(
        model=m.model_args(),
        init_from=m.init_from,
        parallel=ParallelConfig(dp=dp or p.dp, tp=p.tp, pp=p.pp, cp=p.cp, microbatches=p.microbatches,
                                schedule=p.schedule, stages_per_rank=p.stages_per_rank),
        optim=OptimConfig(lr_peak=t.lr.peak, lr_min=t.lr.min_lr, warmup_steps=t.lr.warmup_steps,
                          lr_schedule=t.lr.schedule, weight_decay=t.weight_decay,
                          grad_clip_norm=t.grad_clip_norm),
        steps=t.steps, seed=t.seed, global_batch_size=t.global_batch_size,
        micro_batch_size=t.micro_batch_size, seq_len=t.seq_len, dtype=t.dtype,
        data_paths=list(spec.data.paths), data_max_bytes=spec.data.max_bytes,
        checkpoint_interval_steps=checkpoint_interval_steps or (
            c.auto_initial_steps if c.interval_steps == "auto" else int(c.interval_steps)),
        checkpoint_async=c.async_,
        checkpoint_keep_last=c.keep_last,
        collective_timeout_s=spec.reliability.effective_collective_timeout_s,
        sdc_check_interval_steps=spec.reliability.sdc_check_interval_steps,
        loss_spike_factor=spec.reliability.loss_spike_factor,
        snapshot_interval_steps=(snapshot_interval_steps or c.snapshot_interval_steps) if snapshot_dir else 0,
        snapshot_dir=snapshot_dir if c.snapshot_interval_steps else None,
    )
    return cfg.to_dict()


def write_trainer_config(run_dir: Path, number: int, config: dict[str, Any]) -> Path:
    """The attempt's exact trainer config, kept beside the run for people (ranks get theirs through Ray)."""
    path = run_dir / "attempts" / f"attempt-{number:03d}" / "trainer.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(config, indent=1))
    return path
