"""Trainer configuration: typed dataclasses, built from a plain dict.

The orchestrator turns a validated job file into this dict; the trainer takes
no other input, so it can run without the orchestrator (tests, parity script).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

from trainer.model import ModelArgs


@dataclass(kw_only=True, slots=True)
class ParallelConfig:
    dp: int = 1
    tp: int = 1
    pp: int = 1
    cp: int = 1
    microbatches: int | None = None
    """Pipeline microbatches per step; None means pp."""
    schedule: str = "1f1b"
    stages_per_rank: int = 1

    @property
    def world_size(self) -> int:
        return self.dp * self.tp * self.pp * self.cp


@dataclass(kw_only=True, slots=True)
class OptimConfig:
    lr_peak: float = 3e-3
    lr_min: float = 3e-4
    warmup_steps: int = 10
    lr_schedule: str = "cosine"
    weight_decay: float = 0.1
    grad_clip_norm: float = 1.0


@dataclass(kw_only=True, slots=True)
class TrainConfig:
    model: ModelArgs = field(default_factory=ModelArgs)
    parallel: ParallelConfig = field(default_factory=ParallelConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    steps: int = 100
    seed: int = 0
    global_batch_size: int = 8
    micro_batch_size: int = 2
    seq_len: int = 128
    dtype: str = "float32"
    data_paths: list[str] = field(default_factory=list)
    data_max_bytes: int = 8 * 1024 * 1024
    checkpoint_interval_steps: int = 50
    checkpoint_async: bool = True
    checkpoint_keep_last: int = 3
    collective_timeout_s: float = 120.0
    init_from: str | None = None
    """Hugging Face Llama folder whose weights replace the seeded init when no checkpoint exists yet."""
    sdc_check_interval_steps: int = 0
    """Every this many steps data-parallel replicas compare a checksum of the same computation (0: off)."""
    loss_spike_factor: float = 0.0
    """A loss above this multiple of its recent median is rolled back like a NaN (0: only NaN/inf)."""
    snapshot_interval_steps: int = 0
    """Every this many steps each rank keeps its shard of the state in `snapshot_dir` (0: off)."""
    snapshot_dir: str | None = None
    """Node-local folder (shared memory) of the job's snapshots; the same for every attempt of the job."""
    snapshot_async: bool = True
    """Write snapshots on a background thread from a copy (False: the loop writes them itself)."""

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> TrainConfig:
        d = dict(d)
        model = ModelArgs(**d.pop("model", {}))
        parallel = ParallelConfig(**d.pop("parallel", {}))
        optim = OptimConfig(**d.pop("optim", {}))
        return cls(model=model, parallel=parallel, optim=optim, **d)
