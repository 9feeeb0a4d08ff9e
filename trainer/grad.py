"""Global gradient-norm clipping across every parallel dimension.

torch's clip_grad_norm_ cannot mix DTensors of different meshes (2D FSDP+TP
weights next to 1D FSDP norms) nor see parameters held by other pipeline
stages. Here each rank sums the squares of its local gradient shards, divided
by how many ranks hold an identical copy of that shard, and one all-reduce
over the world gives the exact global norm.
"""

from __future__ import annotations

from collections.abc import Iterable

import torch
import torch.distributed as dist
from torch.distributed.tensor import DTensor, Shard


def _sharded_over(t: torch.Tensor, axis: str) -> bool:
    if not isinstance(t, DTensor):
        return False
    names = t.device_mesh.mesh_dim_names or ()
    return any(n == axis and isinstance(p, Shard) for n, p in zip(names, t.placements, strict=True))


def _local(t: torch.Tensor) -> torch.Tensor:
    return t.to_local() if isinstance(t, DTensor) else t


def clip_grad_norm(params: Iterable[torch.nn.Parameter], max_norm: float, *, dp_cp: int, tp: int,
                   device: torch.device) -> float:
    """Clip in place to `max_norm`; returns the global norm before clipping."""
    grads = [p.grad for p in params if p.grad is not None]
    total = torch.zeros((), dtype=torch.float64, device=device)
    for g in grads:
        copies = (1 if _sharded_over(g, "dp_cp") or dp_cp == 1 else dp_cp) * \
            (1 if _sharded_over(g, "tp") or tp == 1 else tp)
        total += _local(g).detach().double().pow(2).sum() / copies
    if dist.is_initialized() and dist.get_world_size() > 1:
        dist.all_reduce(total)
    norm = float(total.sqrt())
    coef = max_norm / (norm + 1e-6)
    if coef < 1.0:
        for g in grads:
            _local(g).mul_(coef)
    return norm
