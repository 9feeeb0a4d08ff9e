"""Llama-3-style dense transformer, free of any parallelism.

RMSNorm, SwiGLU, grouped-query attention, RoPE (theta 500000), and causal
attention masked at document boundaries (Llama 3 §3.2). Layers live in an
`nn.ModuleDict` keyed by index so their fully qualified names stay the same
when a pipeline stage keeps only some of them (checkpoints reshard across
pipeline layouts). Attention goes through a replaceable `attention_fn` so
context parallelism can swap in ring attention without touching the model.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.attention.flex_attention import BlockMask, create_block_mask, flex_attention


@dataclass(kw_only=True, slots=True)
class ModelArgs:
    dim: int = 256
    """Width of the residual stream."""
    n_layers: int = 4
    n_heads: int = 4
    n_kv_heads: int | None = None
    """Key/value heads for grouped-query attention; None means n_heads."""
    vocab_size: int = 257
    ffn_dim_multiplier: float = 1.3
    multiple_of: int = 32
    norm_eps: float = 1e-5
    rope_theta: float = 500000.0
    max_seq_len: int = 2048

    def __post_init__(self) -> None:
        if self.dim % self.n_heads:
            raise ValueError(f"dim {self.dim} not divisible by n_heads {self.n_heads}")
        if self.n_heads % self.kv_heads:
            raise ValueError(f"n_heads {self.n_heads} not divisible by n_kv_heads {self.kv_heads}")

    @property
    def kv_heads(self) -> int:
        return self.n_kv_heads or self.n_heads

    @property
    def head_dim(self) -> int:
        return self.dim // self.n_heads

    @property
    def ffn_hidden(self) -> int:
        hidden = int(self.ffn_dim_multiplier * int(2 * 4 * self.dim / 3))
        return self.multiple_of * ((hidden + self.multiple_of - 1) // self.multiple_of)

    def num_params(self) -> int:
        d, kv = self.dim, self.kv_heads * self.head_dim
        per_layer = d * d * 2 + d * kv * 2 + 3 * d * self.ffn_hidden + 2 * d
        return self.n_layers * per_layer + 2 * self.vocab_size * d + d


Mask = torch.Tensor | BlockMask
"""A dense boolean (batch, 1, q, k) mask, or a FlexAttention block mask of the same meaning."""
AttentionFn = Callable[[torch.Tensor, torch.Tensor, torch.Tensor, Mask], torch.Tensor]


def rope_tables(head_dim: int, positions: torch.Tensor, theta: float) -> tuple[torch.Tensor, torch.Tensor]:
    """cos/sin tables for the given absolute positions, shape (seq, head_dim/2)."""
    inv = 1.0 / (theta ** (torch.arange(0, head_dim, 2, dtype=torch.float32) / head_dim))
    ang = positions.to(torch.float32)[:, None] * inv[None, :]
    return ang.cos(), ang.sin()


def apply_rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotate pairs (x[2i], x[2i+1]); x is (batch, seq, heads, head_dim)."""
    xf = x.float().unflatten(-1, (-1, 2))
    a, b = xf[..., 0], xf[..., 1]
    c, s = cos[None, :, None, :], sin[None, :, None, :]
    out = torch.stack((a * c - b * s, a * s + b * c), dim=-1).flatten(-2)
    return out.type_as(x)


def document_causal_mask(q_docs: torch.Tensor, k_docs: torch.Tensor,
                         q_pos: torch.Tensor, k_pos: torch.Tensor) -> torch.Tensor:
    """Boolean mask (batch, 1, q, k): True where query may attend to key.

    A query sees keys at or before its own position within the same document.
    Positions and document ids are global, so the same mask works on any
    chunk of the sequence (context parallelism).
    """
    same_doc = q_docs[:, :, None] == k_docs[:, None, :]
    causal = q_pos[:, None] >= k_pos[None, :]
    return (same_doc & causal[None])[:, None]


def document_block_mask(q_docs: torch.Tensor, k_docs: torch.Tensor,
                        q_pos: torch.Tensor, k_pos: torch.Tensor) -> BlockMask:
    """The same mask as `document_causal_mask`, as a FlexAttention block mask.

    Blocks wholly outside every document-causal span are skipped, so attention
    cost follows the documents' sizes instead of the sequence length squared.
    """

    def allowed(b: torch.Tensor, _h: torch.Tensor, qi: torch.Tensor, ki: torch.Tensor) -> torch.Tensor:
        return (q_docs[b, qi] == k_docs[b, ki]) & (q_pos[qi] >= k_pos[ki])

    return create_block_mask(allowed, q_docs.shape[0], None, q_docs.shape[1], k_docs.shape[1],
                             device=q_docs.device)


def uses_block_mask(device: torch.device) -> bool:
    """FlexAttention where it is fused: CUDA. On the CPU the dense path is used (see BENCHMARKS.md:
    eager FlexAttention materialises the scores and is far slower; compiled it only ties with dense)."""
    return device.type == "cuda"


_compiled_flex: Callable[..., torch.Tensor] | None = None


def flex(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, block_mask: BlockMask) -> torch.Tensor:
    global _compiled_flex
    if _compiled_flex is None:
        _compiled_flex = torch.compile(flex_attention, dynamic=False)
    return _compiled_flex(q, k, v, block_mask=block_mask)


def sdpa_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: Mask) -> torch.Tensor:
    """Reference attention: q/k/v are (batch, heads, seq, head_dim); a dense boolean mask or a block mask."""
    if isinstance(mask, BlockMask):
        return flex(q, k, v, mask)
    return F.scaled_dot_product_attention(q, k, v, attn_mask=mask)


class RMSNorm(nn.Module):
    def __init__(self, dim: int, eps: float) -> None:
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        xf = x.float()
        out = xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + self.eps)
        return out.type_as(x) * self.weight


class Attention(nn.Module):
    def __init__(self, args: ModelArgs) -> None:
        super().__init__()
        self.n_heads, self.n_kv_heads, self.head_dim = args.n_heads, args.kv_heads, args.head_dim
        self.wq = nn.Linear(args.dim, args.n_heads * args.head_dim, bias=False)
        self.wk = nn.Linear(args.dim, args.kv_heads * args.head_dim, bias=False)
        self.wv = nn.Linear(args.dim, args.kv_heads * args.head_dim, bias=False)
        self.wo = nn.Linear(args.n_heads * args.head_dim, args.dim, bias=False)
        self.attention_fn: AttentionFn = sdpa_attention

    def forward(self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor,
                mask: Mask) -> torch.Tensor:
        bsz, seq, _ = x.shape
        # -1 heads: under tensor parallelism each rank holds a slice of the heads.
        q = self.wq(x).view(bsz, seq, -1, self.head_dim)
        k = self.wk(x).view(bsz, seq, -1, self.head_dim)
        v = self.wv(x).view(bsz, seq, -1, self.head_dim)
        q, k = apply_rope(q, cos, sin), apply_rope(k, cos, sin)
        rep = q.shape[2] // k.shape[2]
        if rep > 1:
            k = k.repeat_interleave(rep, dim=2)
            v = v.repeat_interleave(rep, dim=2)
        out = self.attention_fn(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2), mask)
        return self.wo(out.transpose(1, 2).reshape(bsz, seq, -1))


class FeedForward(nn.Module):
    def __init__(self, args: ModelArgs) -> None:
        super().__init__()
        self.w1 = nn.Linear(args.dim, args.ffn_hidden, bias=False)
        self.w2 = nn.Linear(args.ffn_hidden, args.dim, bias=False)
        self.w3 = nn.Linear(args.dim, args.ffn_hidden, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.w2(F.silu(self.w1(x)) * self.w3(x))


class TransformerBlock(nn.Module):
    def __init__(self, args: ModelArgs) -> None:
        super().__init__()
        self.attention_norm = RMSNorm(args.dim, args.norm_eps)
        self.attention = Attention(args)
        self.ffn_norm = RMSNorm(args.dim, args.norm_eps)
        self.feed_forward = FeedForward(args)

    def forward(self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor,
                mask: Mask) -> torch.Tensor:
        h = x + self.attention(self.attention_norm(x), cos, sin, mask)
        return h + self.feed_forward(self.ffn_norm(h))


class Transformer(nn.Module):
    """Decoder-only LM. Any of tok_embeddings/norm/output may be None (pipeline stages).

    forward(h, docs, positions, kv_docs, kv_positions): the first stage takes
    token ids, later stages take hidden states. docs (batch, seq) and positions
    (seq,) describe the query tokens this call holds; kv_docs and kv_positions
    describe the keys attention will see, when those differ (a context-parallel
    rank holds a chunk of the queries but attends over every key). Positions may
    also come as (batch, seq) with identical rows, as pipelining splits every
    input along the batch.
    """

    def __init__(self, args: ModelArgs) -> None:
        super().__init__()
        self.args = args
        self.tok_embeddings: nn.Embedding | None = nn.Embedding(args.vocab_size, args.dim)
        self.layers = nn.ModuleDict({str(i): TransformerBlock(args) for i in range(args.n_layers)})
        self.norm: RMSNorm | None = RMSNorm(args.dim, args.norm_eps)
        self.output: nn.Linear | None = nn.Linear(args.dim, args.vocab_size, bias=False)

    @torch.no_grad()
    def init_weights(self, seed: int, assign: Callable[[torch.Tensor, torch.Tensor], None] | None = None) -> None:
        """Deterministic init that does not depend on which layers or shards this rank keeps.

        Each parameter's full value is drawn on the CPU from a generator seeded by
        its name (one full parameter at a time); `assign(param, full)` stores it,
        by default a plain copy. A parallelised model passes one that keeps only
        the rank's shard (`parallelize.assign_shard`), so every layout, and a
        model materialised from the meta device, starts from the same values.
        """
        assign = assign or _copy
        for name, p in self.named_parameters():
            g = torch.Generator().manual_seed(seed * 1_000_003 + _stable_hash(name))
            if name.endswith("norm.weight") or ".attention_norm." in name or ".ffn_norm." in name:
                p.fill_(1.0)
            elif name.startswith("tok_embeddings"):
                assign(p, torch.randn(p.shape, generator=g))
            else:
                fan_in = p.shape[-1]
                std = 1.0 / math.sqrt(fan_in)
                if name.endswith(("wo.weight", "w2.weight")):
                    std /= math.sqrt(2 * self.args.n_layers)
                assign(p, torch.randn(p.shape, generator=g) * std)

    def forward(self, h: torch.Tensor, docs: torch.Tensor, positions: torch.Tensor,
                kv_docs: torch.Tensor | None = None, kv_positions: torch.Tensor | None = None) -> torch.Tensor:
        positions = positions[0] if positions.dim() == 2 else positions
        kv_docs = docs if kv_docs is None else kv_docs
        kv_positions = positions if kv_positions is None else kv_positions
        kv_positions = kv_positions[0] if kv_positions.dim() == 2 else kv_positions
        if self.tok_embeddings is not None:
            h = self.tok_embeddings(h)
        cos, sin = rope_tables(self.args.head_dim, positions, self.args.rope_theta)
        mask_fn = document_block_mask if uses_block_mask(docs.device) else document_causal_mask
        mask = mask_fn(docs, kv_docs, positions, kv_positions)
        for layer in self.layers.values():
            h = layer(h, cos, sin, mask)
        if self.norm is not None:
            h = self.norm(h)
        if self.output is not None:
            h = self.output(h).float()
        return h


def _copy(p: torch.Tensor, full: torch.Tensor) -> None:
    p.copy_(full)


def _stable_hash(s: str) -> int:
    h = 0
    for ch in s.encode():
        h = (h * 131 + ch) % 1_000_000_007
    return h
