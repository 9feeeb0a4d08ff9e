"""Translate a validated JobSpec into the trainer's own configuration dict."""

from __future__ import annotations

from typing import Any

from orchestrator.spec import JobSpec
from trainer.config import OptimConfig, ParallelConfig, TrainConfig
from trainer.model import ModelArgs


def trainer_config(spec: JobSpec, *, dp: int | None = None) -> dict[str, Any]:
    """The trainer config for `spec`; `dp` overrides the data-parallel degree (shrinking)."""
    m, p, t, c = spec.model, spec.parallelism, spec.training, spec.checkpoint
    cfg = TrainConfig(
        model=ModelArgs(dim=m.dim, n_layers=m.n_layers, n_heads=m.n_heads, n_kv_heads=m.n_kv_heads,
                        vocab_size=m.vocab_size, ffn_dim_multiplier=m.ffn_dim_multiplier,
                        multiple_of=m.multiple_of, norm_eps=m.norm_eps, rope_theta=m.rope_theta,
                        max_seq_len=m.max_seq_len),
        parallel=ParallelConfig(dp=dp or p.dp, tp=p.tp, pp=p.pp, cp=p.cp, microbatches=p.microbatches,
                                schedule=p.schedule, stages_per_rank=p.stages_per_rank),
        optim=OptimConfig(lr_peak=t.lr.peak, lr_min=t.lr.min_lr, warmup_steps=t.lr.warmup_steps,
                          lr_schedule=t.lr.schedule, weight_decay=t.weight_decay,
                          grad_clip_norm=t.grad_clip_norm),
        steps=t.steps, seed=t.seed, global_batch_size=t.global_batch_size,
        micro_batch_size=t.micro_batch_size, seq_len=t.seq_len, dtype=t.dtype,
        data_paths=list(spec.data.paths), data_max_bytes=spec.data.max_bytes,
        checkpoint_interval_steps=c.interval_steps, checkpoint_async=c.async_,
        checkpoint_keep_last=c.keep_last,
        collective_timeout_s=spec.reliability.effective_collective_timeout_s,
        sdc_check_interval_steps=spec.reliability.sdc_check_interval_steps,
        loss_spike_factor=spec.reliability.loss_spike_factor,
    )
    return cfg.to_dict()
