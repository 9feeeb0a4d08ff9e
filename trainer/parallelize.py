"""Applies parallelism to a plain model, one function per dimension.

Order matters: tensor parallelism first (it rewrites the linear layers into
DTensors on the tp mesh), then FSDP over the flattened dp×cp mesh on each
block and finally the root, so FSDP shards the already tensor-parallel
parameters (2D sharding).
"""

from __future__ import annotations

import logging

import torch
from torch import nn
from torch.distributed.device_mesh import DeviceMesh
from torch.distributed.fsdp import MixedPrecisionPolicy, fully_shard

from trainer.model import Transformer

logger = logging.getLogger(__name__)


def apply_fsdp(model: Transformer, dp_mesh: DeviceMesh, *, param_dtype: torch.dtype,
               reshard_after_forward: bool) -> None:
    """Shard every block, then the root (embeddings, final norm, output)."""
    mp = MixedPrecisionPolicy(param_dtype=param_dtype, reduce_dtype=torch.float32)
    for block in model.layers.values():
        fully_shard(block, mesh=dp_mesh, mp_policy=mp, reshard_after_forward=reshard_after_forward)
    fully_shard(model, mesh=dp_mesh, mp_policy=mp, reshard_after_forward=reshard_after_forward)
    logger.info("Applied FSDP over %s ranks", dp_mesh.size())


def parallelize_model(model: Transformer, mesh: DeviceMesh, *, param_dtype: torch.dtype,
                      pipelined: bool) -> nn.Module:
    """Apply every enabled dimension to `model` in place and return it."""
    if mesh["tp"].size() > 1:
        raise NotImplementedError("tensor parallelism is not available in this build")
    if mesh["cp"].size() > 1:
        raise NotImplementedError("context parallelism is not available in this build")
    dp_cp = mesh["dp_cp"]
    if dp_cp.size() > 1:
        apply_fsdp(model, dp_cp, param_dtype=param_dtype, reshard_after_forward=not pipelined)
    return model
