"""Pipeline parallelism: cut the model into stages and pick a schedule.

A rank holds one stage (GPipe, 1F1B) or `stages_per_rank` stages (interleaved
1F1B: stages r, r+pp, r+2pp, ...). The rank keeps one `Transformer` holding
only the layers of its stages (layers keep their global index, so checkpoint
keys do not depend on the pipeline layout) and one thin `StageModule` per
stage that shares those layers.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn
from torch.distributed import ProcessGroup
from torch.distributed.pipelining import PipelineStage
from torch.distributed.pipelining.schedules import (
    PipelineScheduleMulti,
    PipelineScheduleSingle,
    Schedule1F1B,
    ScheduleGPipe,
    ScheduleInterleaved1F1B,
)

from trainer.model import Transformer

SCHEDULES = ("gpipe", "1f1b", "interleaved_1f1b")


def stage_layers(n_layers: int, n_stages: int) -> list[list[int]]:
    """Contiguous layer ids per stage; earlier stages take the remainder."""
    if n_layers < n_stages:
        raise ValueError(f"{n_stages} pipeline stages need at least {n_stages} layers, got {n_layers}")
    base, extra = divmod(n_layers, n_stages)
    out, start = [], 0
    for s in range(n_stages):
        n = base + (1 if s < extra else 0)
        out.append(list(range(start, start + n)))
        start += n
    return out


def local_stages(pp_rank: int, pp: int, stages_per_rank: int) -> list[int]:
    return [pp_rank + k * pp for k in range(stages_per_rank)]


class StageModule(nn.Module):
    """One pipeline stage: a view over some of the rank's layers."""

    forward = Transformer.forward

    def __init__(self, owner: Transformer, layer_ids: list[int], first: bool, last: bool) -> None:
        super().__init__()
        self.args = owner.args
        self.layers = nn.ModuleDict({str(i): owner.layers[str(i)] for i in layer_ids})
        self.tok_embeddings = owner.tok_embeddings if first else None
        self.norm = owner.norm if last else None
        self.output = owner.output if last else None


def trim_to_stages(model: Transformer, stage_ids: list[int], n_stages: int) -> list[list[int]]:
    """Drop what this rank's stages do not hold; returns the layer ids per local stage."""
    per_stage = stage_layers(model.args.n_layers, n_stages)
    keep = {i for s in stage_ids for i in per_stage[s]}
    for key in list(model.layers.keys()):
        if int(key) not in keep:
            del model.layers[key]
    if 0 not in stage_ids:
        model.tok_embeddings = None
    if n_stages - 1 not in stage_ids:
        model.norm = None
        model.output = None
    return [per_stage[s] for s in stage_ids]


def build_schedule(model: Transformer, stage_ids: list[int], layer_ids: list[list[int]], n_stages: int,
                   *, schedule: str, n_microbatches: int, loss_fn: Callable[..., torch.Tensor],
                   device: torch.device, group: ProcessGroup) -> PipelineScheduleSingle | PipelineScheduleMulti:
    stages = [
        PipelineStage(StageModule(model, ids, first=s == 0, last=s == n_stages - 1), s, n_stages, device,
                      group=group)
        for s, ids in zip(stage_ids, layer_ids, strict=True)
    ]
    if schedule == "interleaved_1f1b":
        return ScheduleInterleaved1F1B(stages, n_microbatches, loss_fn=loss_fn)
    if len(stages) != 1:
        raise ValueError(f"schedule {schedule} runs one stage per rank, got {len(stages)}")
    cls = {"gpipe": ScheduleGPipe, "1f1b": Schedule1F1B}.get(schedule)
    if cls is None:
        raise ValueError(f"unknown pipeline schedule {schedule!r}; choose one of {', '.join(SCHEDULES)}")
    return cls(stages[0], n_microbatches, loss_fn=loss_fn)
