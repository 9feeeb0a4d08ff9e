"""Single-GPU throughput and MFU of a ~1B-parameter Llama proxy through the job's own training path.

    python bench/gpu_mfu.py                          # on a GPU machine (NCCL, bfloat16)
    python bench/gpu_mfu.py --dtype float32          # a job file's other training.dtype
    python bench/gpu_mfu.py --tiny --steps 2         # dry run on the CPU (gloo), any machine

What runs is what a rank of a job runs for one step: the model built on the
meta device and materialised by `trainer.train.materialize`, FSDP2
(`parallelize.apply_fsdp`) with the job's dtype as the mixed-precision compute
dtype (float32 master weights and gradient reduction, as in a job), document
masks (a FlexAttention block mask on CUDA), `train.forward_backward` over
micro-batches, `grad.clip_grad_norm`, AdamW as `train.train` builds it.

What it skips, exactly: there is one rank, so FSDP's all-gathers and
reduce-scatters run over a world of one (no network), and there is no tensor,
context or pipeline parallelism; the tokens and document boundaries are random
(no data loading); no checkpoints, no metrics.jsonl, no beacons, no learning-
rate schedule. Reports tokens/s and model FLOPs utilisation: (6·N + 12·L·d·T)
FLOPs per token (PaLM appendix B) against the device's dense bf16 peak.
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

from trainer.grad import clip_grad_norm  # noqa: E402
from trainer.model import ModelArgs, Transformer, uses_block_mask  # noqa: E402
from trainer.parallel_dims import ParallelDims  # noqa: E402
from trainer.parallelize import apply_fsdp, parallelize_model  # noqa: E402
from trainer.train import LocalBatch, ModelParts, forward_backward, materialize  # noqa: E402

PEAK_BF16_TFLOPS = {"H100": 989.4, "H200": 989.4, "A100": 312.0, "B200": 2250.0}
SKIPPED = ["collectives over more than one rank (world of one)", "tensor/context/pipeline parallelism",
           "data loading (random tokens and document boundaries)", "checkpoints", "metrics.jsonl and beacons",
           "learning-rate schedule"]


def peak_tflops(name: str, override: float | None) -> float | None:
    if override:
        return override
    return next((v for k, v in PEAK_BF16_TFLOPS.items() if k in name), None)


def build(margs: ModelArgs, device: torch.device, dtype: torch.dtype) -> Transformer:
    """The job's build: meta device, parallelise (FSDP even over one rank), materialise this rank's shards."""
    with torch.device("meta"):
        model = Transformer(margs)
    mesh = ParallelDims(dp=1, tp=1, pp=1, cp=1, world_size=1).build_mesh(device.type)
    parallelize_model(model, mesh, param_dtype=dtype, pipelined=False)
    # parallelize_model leaves a world of one unsharded; a job's ranks always have FSDP, so apply it here.
    apply_fsdp(model, mesh["dp_cp"], param_dtype=dtype, reshard_after_forward=True)
    materialize(model, device, seed=0)
    return model


def random_batch(margs: ModelArgs, batch: int, seq: int, device: torch.device, g: torch.Generator) -> LocalBatch:
    tokens = torch.randint(0, margs.vocab_size, (batch, seq + 1), generator=g)
    starts = torch.rand(batch, seq, generator=g) < 4 / seq  # about four documents per row
    docs = torch.cumsum(starts.long(), dim=1)
    pos = torch.arange(seq)
    return LocalBatch(tokens[:, :-1].to(device), tokens[:, 1:].to(device), docs.to(device), pos.to(device),
                      docs.to(device), pos.to(device))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--warmup", type=int, default=5)
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--micro-batch", type=int, default=None, help="micro-batch size (default: --batch)")
    ap.add_argument("--seq", type=int, default=2048)
    ap.add_argument("--dtype", choices=["bfloat16", "float32"], default="bfloat16",
                    help="the job's training.dtype (FSDP's compute dtype)")
    ap.add_argument("--tiny", action="store_true", help="small model on the CPU: a dry run of the same path")
    ap.add_argument("--peak-tflops", type=float, default=None)
    args = ap.parse_args()
    cuda = torch.cuda.is_available() and not args.tiny
    device = torch.device("cuda", 0) if cuda else torch.device("cpu")
    if cuda:
        torch.cuda.set_device(device)
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
    dtype = torch.bfloat16 if args.dtype == "bfloat16" else torch.float32
    model = build(margs, device, dtype)
    parts = ModelParts(model)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4, weight_decay=0.1, betas=(0.9, 0.95))
    n_params = margs.num_params()
    g = torch.Generator().manual_seed(0)
    times, loss = [], torch.zeros(())
    for i in range(args.warmup + args.steps):
        b = random_batch(margs, args.batch, args.seq, device, g)
        if cuda:
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        loss = forward_backward(parts, b, args.micro_batch or args.batch)
        clip_grad_norm(model.parameters(), 1.0, dp_cp=1, tp=1, device=device)
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
    peak = peak_tflops(name, args.peak_tflops) if cuda else None
    out = {"device": name, "params": n_params, "dtype": args.dtype, "fsdp": True,
           "attention_mask": "flex block mask" if uses_block_mask(device) else "dense boolean",
           "batch": args.batch, "micro_batch": args.micro_batch or args.batch, "seq": args.seq,
           "median_step_s": step_s, "tokens_per_second": tok_s, "achieved_tflops": tok_s * flops_per_token / 1e12,
           "mfu": (tok_s * flops_per_token / 1e12 / peak) if peak else None,
           "peak_memory_gib": torch.cuda.max_memory_allocated() / 2**30 if cuda else None,
           "final_loss": float(loss), "skipped": SKIPPED}
    print(json.dumps(out, indent=1))
    out_dir = os.environ.get("OUT")
    if out_dir:
        Path(out_dir, "gpu_mfu.json").write_text(json.dumps(out, indent=1))
    dist.destroy_process_group()


if __name__ == "__main__":
    main()
