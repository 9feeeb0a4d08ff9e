"""Does FlexAttention pay on this CPU? Document-masked attention, dense boolean mask against block mask.

    python bench/flex_attention_cpu.py [--repeats 7] [--no-compile]

Same inputs (batch 2, 4 heads, 128 tokens, head_dim 32, about 6 documents per
row), the trainer's dense path (`sdpa_attention` with `document_causal_mask`)
against `flex_attention` with `document_block_mask`, eager and (unless
--no-compile) under torch.compile. Reports the largest difference from the dense
output, median seconds per call, and the compile time.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402
from torch.nn.attention.flex_attention import flex_attention  # noqa: E402

from bench.common import median, save  # noqa: E402
from trainer.model import document_block_mask, document_causal_mask, sdpa_attention  # noqa: E402


def timed(fn, repeats: int) -> float:  # type: ignore[no-untyped-def]
    ts = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        ts.append(time.perf_counter() - t0)
    return median(ts)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeats", type=int, default=7)
    ap.add_argument("--no-compile", action="store_true")
    args = ap.parse_args()
    g = torch.Generator().manual_seed(0)
    b, h, s, d = 2, 4, 128, 32
    docs = torch.cumsum((torch.rand(b, s, generator=g) < 0.05).long(), 1)
    pos = torch.arange(s)
    q, k, v = (torch.randn(b, h, s, d, generator=g) for _ in range(3))
    dense_mask = document_causal_mask(docs, docs, pos, pos)
    block_mask = document_block_mask(docs, docs, pos, pos)
    ref = sdpa_attention(q, k, v, dense_mask)
    out = {"shape": [b, h, s, d], "torch": torch.__version__,
           "dense_s": timed(lambda: sdpa_attention(q, k, v, dense_mask), args.repeats),
           "flex_eager_max_diff": float((flex_attention(q, k, v, block_mask=block_mask) - ref).abs().max()),
           "flex_eager_s": timed(lambda: flex_attention(q, k, v, block_mask=block_mask), args.repeats)}
    if not args.no_compile:
        compiled = torch.compile(flex_attention, dynamic=False)
        t0 = time.perf_counter()
        first = compiled(q, k, v, block_mask=block_mask)
        out["flex_compile_s"] = time.perf_counter() - t0
        out["flex_compiled_max_diff"] = float((first - ref).abs().max())
        out["flex_compiled_s"] = timed(lambda: compiled(q, k, v, block_mask=block_mask), args.repeats)
    out["load_average_at_end"] = os.getloadavg()
    for key, val in out.items():
        print(f"{key}: {val}")
    print(f"saved {save('flex_attention_cpu', out)}")


if __name__ == "__main__":
    main()
