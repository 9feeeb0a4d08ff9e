"""Single-GPU throughput and MFU of a ~1B-parameter Llama proxy (bf16, NCCL).

    python bench/gpu_mfu.py                 # on a GPU machine
    python bench/gpu_mfu.py --tiny --steps 2  # logic check on CPU (gloo)

Runs the project's own model and training step (FSDP over a world of one, so
the same code path as multi-GPU jobs) on random tokens, and reports tokens/s
and model FLOPs utilisation: (6·N + 12·L·d·T) FLOPs per token (PaLM appendix B)
against the device's dense bf16 peak.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402
import torch.distributed as dist  # noqa: E402

from trainer.model import ModelArgs, Transformer  # noqa: E402
from trainer.parallel_dims import ParallelDims  # noqa: E402
from trainer.parallelize import parallelize_model  # noqa: E402
from trainer.train import lm_loss  # noqa: E402

PEAK_BF16_TFLOPS = {"H100": 989.4, "H200": 989.4, "A100": 312.0, "B200": 2250.0}


def peak_tflops(name: str, override: float | None) -> float | None:
    if override:
        return override
    return next((v for k, v in PEAK_BF16_TFLOPS.items() if k in name), None)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--warmup", type=int, default=5)
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--seq", type=int, default=2048)
    ap.add_argument("--tiny", action="store_true", help="small model, for a CPU logic check")
    ap.add_argument("--peak-tflops", type=float, default=None)
    args = ap.parse_args()
    cuda = torch.cuda.is_available() and not args.tiny
    device = torch.device("cuda", 0) if cuda else torch.device("cpu")
    os.environ.setdefault("MASTER_ADDR", "127.0.0.1")
    os.environ.setdefault("MASTER_PORT", "29555")
    dist.init_process_group("nccl" if cuda else "gloo", rank=0, world_size=1)
    if args.tiny:
        margs = ModelArgs(dim=64, n_layers=2, n_heads=4, n_kv_heads=2, vocab_size=1024, max_seq_len=128)
        args.seq, args.batch, args.warmup = 64, 2, min(args.warmup, 1)
    else:
        # ~1.2B parameters: Llama-3-style proportions at 1/8 of 8B's width.
        margs = ModelArgs(dim=2048, n_layers=16, n_heads=16, n_kv_heads=8, vocab_size=128256,
                          ffn_dim_multiplier=1.3, multiple_of=1024, max_seq_len=args.seq)
    model = Transformer(margs)
    model.init_weights(0)
    model.to(device)
    mesh = ParallelDims(dp=1, tp=1, pp=1, cp=1, world_size=1).build_mesh(device.type)
    parallelize_model(model, mesh, param_dtype=torch.bfloat16 if cuda else torch.float32, pipelined=False)
    if cuda:
        model.to(torch.bfloat16)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4, fused=cuda)
    n_params = sum(p.numel() for p in model.parameters())
    tokens = torch.randint(0, margs.vocab_size, (args.batch, args.seq + 1), device=device)
    docs = torch.zeros(args.batch, args.seq, dtype=torch.long, device=device)
    pos = torch.arange(args.seq, device=device)
    times = []
    for i in range(args.warmup + args.steps):
        if cuda:
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        loss = lm_loss(model(tokens[:, :-1], docs, pos), tokens[:, 1:])
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        if cuda:
            torch.cuda.synchronize()
        if i >= args.warmup:
            times.append(time.perf_counter() - t0)
    step_s = sorted(times)[len(times) // 2]
    tok_s = args.batch * args.seq / step_s
    non_embed = n_params - margs.vocab_size * margs.dim
    flops_per_token = 6 * non_embed + 12 * margs.n_layers * margs.dim * args.seq
    name = torch.cuda.get_device_name(0) if cuda else "cpu"
    peak = peak_tflops(name, args.peak_tflops)
    out = {"device": name, "params": n_params, "batch": args.batch, "seq": args.seq, "median_step_s": step_s,
           "tokens_per_second": tok_s, "achieved_tflops": tok_s * flops_per_token / 1e12,
           "mfu": (tok_s * flops_per_token / 1e12 / peak) if peak else None,
           "peak_memory_gib": torch.cuda.max_memory_allocated() / 2**30 if cuda else None,
           "final_loss": float(loss)}
    print(json.dumps(out, indent=1))
    out_dir = os.environ.get("OUT")
    if out_dir:
        Path(out_dir, "gpu_mfu.json").write_text(json.dumps(out, indent=1))
    dist.destroy_process_group()


if __name__ == "__main__":
    main()
