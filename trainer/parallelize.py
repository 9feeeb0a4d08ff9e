"""Applies parallelism to a plain model, one function per dimension.

Order matters: tensor parallelism first (it turns the linear layers into
DTensors on the tp mesh), then context parallelism (swaps the attention
function), then FSDP over the flattened dp×cp mesh on each block and on the
embedding, final norm and output, so FSDP shards parameters that may already
be tensor-parallel (2D). Pipeline stages are cut before any of this
(`pipeline.py`); each stage is parallelized the same way.
"""

from __future__ import annotations

import logging

import torch
from torch import nn
from torch.distributed.device_mesh import DeviceMesh
from torch.distributed.fsdp import MixedPrecisionPolicy, fully_shard
from torch.distributed.tensor import DTensor, distribute_tensor
from torch.distributed.tensor.parallel import ColwiseParallel, RowwiseParallel, parallelize_module

from trainer.context_parallel import AllGatherKVAttention
from trainer.model import Transformer

logger = logging.getLogger(__name__)

TP_PLAN = {
    "attention.wq": ColwiseParallel,
    "attention.wk": ColwiseParallel,
    "attention.wv": ColwiseParallel,
    "attention.wo": RowwiseParallel,
    "feed_forward.w1": ColwiseParallel,
    "feed_forward.w3": ColwiseParallel,
    "feed_forward.w2": RowwiseParallel,
}
"""Megatron-style: column-wise in, row-wise out, one all-reduce per sublayer."""


def apply_tp(model: Transformer, tp_mesh: DeviceMesh) -> None:
    """Shard attention heads and the FFN hidden dimension over the tp ranks."""
    for block in model.layers.values():
        parallelize_module(block, tp_mesh, {name: style() for name, style in TP_PLAN.items()})
    logger.info("Applied tensor parallelism over %d ranks", tp_mesh.size())


def apply_cp(model: Transformer, cp_mesh: DeviceMesh) -> None:
    """Every attention layer gathers keys and values over the cp group."""
    attn = AllGatherKVAttention(cp_mesh.get_group())
    for block in model.layers.values():
        block.attention.attention_fn = attn
    logger.info("Applied context parallelism over %d ranks", cp_mesh.size())


def apply_fsdp(model: Transformer, dp_mesh: DeviceMesh, *, param_dtype: torch.dtype,
               reshard_after_forward: bool) -> None:
    """Shard every block, and the embedding / norm+output as their own units.

    The outer modules get their own units rather than a root unit because a
    pipeline stage may hold none of them, and interleaved stages on one rank
    share them.
    """
    mp = MixedPrecisionPolicy(param_dtype=param_dtype, reduce_dtype=torch.float32)
    units: list[nn.Module] = list(model.layers.values())
    if model.tok_embeddings is not None:
        units.append(model.tok_embeddings)
    if model.norm is not None:
        units.append(model.norm)
    if model.output is not None:
        units.append(model.output)
    for unit in units:
        fully_shard(unit, mesh=dp_mesh, mp_policy=mp, reshard_after_forward=reshard_after_forward)
    logger.info("Applied FSDP over %d ranks", dp_mesh.size())


def assign_shard(p: torch.Tensor, full: torch.Tensor) -> None:
    """Copy `full` (a whole parameter's value) into `p`, or into this rank's shard of it when `p` is a DTensor
    (tensor-parallel, FSDP or both); every rank holds the same `full`, so no communication is needed."""
    if isinstance(p, DTensor):
        p.copy_(distribute_tensor(full.to(p.device), p.device_mesh, p.placements, src_data_rank=None))
    else:
        p.copy_(full)


def parallelize_model(model: Transformer, mesh: object, *, param_dtype: torch.dtype,
                      pipelined: bool) -> Transformer:
    """Apply every enabled dimension to `model` in place (mesh: a ParallelMesh)."""
    tp, cp, dp_cp = mesh["tp"], mesh["cp"], mesh["dp_cp"]  # type: ignore[index]
    if tp.size() > 1:
        apply_tp(model, tp)
    if cp.size() > 1:
        apply_cp(model, cp)
    if dp_cp.size() > 1:
        apply_fsdp(model, dp_cp, param_dtype=param_dtype, reshard_after_forward=not pipelined)
    return model
