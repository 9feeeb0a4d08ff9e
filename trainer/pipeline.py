"""Pipeline parallelism: cut the model into stages and pick a schedule.

A rank holds one stage (GPipe, 1F1B) or `stages_per_rank` stages (interleaved
1F1B: stages r, r+pp, r+2pp, ...). The rank keeps one `Transformer` holding
only the layers of its stages (layers keep their global index, so checkpoint
keys do not depend on the pipeline layout) and one thin `StageModule` per
stage that shares those layers.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

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
from trainer.progress import RankProgress

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


class TracedStage(PipelineStage):
    """A pipeline stage that reports its point-to-point progress (see `RankProgress`).

    It also offers the `p2p` fault point: just before the stage posts a send,
    so that a stall there leaves the next (or previous) stage waiting in its receive.
    """

    def __init__(self, *args: Any, progress: RankProgress | None = None,
                 fault_point: Callable[[str], None] | None = None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.progress = progress or RankProgress()
        self.fault_point = fault_point

    def _fwd_chan(self) -> str:
        return f"fwd {self.stage_index - 1}>{self.stage_index}"

    def _bwd_chan(self) -> str:
        return f"bwd {self.stage_index + 1}>{self.stage_index}"

    def _posted(self, role: str, chan: str, ops: list[Any]) -> list[Any]:
        if ops:
            self.progress.posted(role, chan, int(ops[0].peer))
        return ops

    def _before_send(self) -> None:
        self.progress.mark("p2p")
        if self.fault_point is not None:
            self.fault_point("p2p")

    def get_fwd_recv_ops(self, fwd_chunk_id: int) -> list[Any]:
        return self._posted("recv", self._fwd_chan(), super().get_fwd_recv_ops(fwd_chunk_id))

    def get_bwd_recv_ops(self, bwd_chunk_id: int) -> list[Any]:
        return self._posted("recv", self._bwd_chan(), super().get_bwd_recv_ops(bwd_chunk_id))

    def get_fwd_send_ops(self, fwd_chunk_id: int) -> list[Any]:
        if not self.is_last:
            self._before_send()
        return self._posted("send", f"fwd {self.stage_index}>{self.stage_index + 1}",
                            super().get_fwd_send_ops(fwd_chunk_id))

    def get_bwd_send_ops(self, bwd_chunk_id: int) -> list[Any]:
        if not self.is_first:
            self._before_send()
        return self._posted("send", f"bwd {self.stage_index}>{self.stage_index - 1}",
                            super().get_bwd_send_ops(bwd_chunk_id))

    def forward_one_chunk(self, *args: Any, **kwargs: Any) -> Any:
        if not self.is_first:
            self.progress.done(self._fwd_chan())
        return super().forward_one_chunk(*args, **kwargs)

    def backward_one_chunk(self, *args: Any, **kwargs: Any) -> Any:
        if not self.is_last:
            self.progress.done(self._bwd_chan())
        return super().backward_one_chunk(*args, **kwargs)


def build_schedule(model: Transformer, stage_ids: list[int], layer_ids: list[list[int]], n_stages: int,
                   *, schedule: str, n_microbatches: int, loss_fn: Callable[..., torch.Tensor],
                   device: torch.device, group: ProcessGroup, progress: RankProgress | None = None,
                   fault_point: Callable[[str], None] | None = None
                   ) -> PipelineScheduleSingle | PipelineScheduleMulti:
    stages = [
        TracedStage(StageModule(model, ids, first=s == 0, last=s == n_stages - 1), s, n_stages, device,
                    group=group, progress=progress, fault_point=fault_point)
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
