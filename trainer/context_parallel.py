"""Context parallelism: each cp rank holds 2 of 2·cp sequence chunks, zigzag.

Rank r holds chunks r and 2·cp-1-r, so under a causal mask every rank does the
same amount of attention work. Attention is exact: keys and values are
all-gathered over the cp group (Llama 3 §3.3.2 uses this all-gather form), with
an autograd-aware functional collective whose backward reduce-scatters the
gradients. Document and position ids of every key are known locally (each rank
loads the whole sample), so document-boundary masks stay exact.
"""

from __future__ import annotations

import torch
from torch.distributed import ProcessGroup
from torch.distributed._functional_collectives import all_gather_single_autograd

from trainer.model import Mask, sdpa_attention


def zigzag_indices(seq_len: int, cp: int, cp_rank: int) -> torch.Tensor:
    """Token positions held by `cp_rank`: chunks cp_rank and 2·cp-1-cp_rank."""
    if seq_len % (2 * cp):
        raise ValueError(f"seq_len {seq_len} not divisible by 2*cp = {2 * cp}")
    c = seq_len // (2 * cp)
    first = torch.arange(cp_rank * c, (cp_rank + 1) * c)
    second = torch.arange((2 * cp - 1 - cp_rank) * c, (2 * cp - cp_rank) * c)
    return torch.cat([first, second])


def gathered_indices(seq_len: int, cp: int) -> torch.Tensor:
    """Positions of the keys after an all-gather over the cp group (rank-major)."""
    return torch.cat([zigzag_indices(seq_len, cp, r) for r in range(cp)])


class AllGatherKVAttention:
    """Attention over keys/values gathered from every cp rank; queries stay local."""

    def __init__(self, group: ProcessGroup) -> None:
        self.group = group

    def __call__(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: Mask) -> torch.Tensor:
        # (batch, heads, seq, head_dim): gather along the sequence.
        k_all = all_gather_single_autograd(k.contiguous(), 2, self.group)
        v_all = all_gather_single_autograd(v.contiguous(), 2, self.group)
        return sdpa_attention(q, k_all, v_all, mask)
