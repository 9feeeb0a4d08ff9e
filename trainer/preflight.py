"""Preflight collective of one rank: `python -m trainer.preflight` (torch.distributed env variables).

All candidate ranks all-reduce a known tensor and check the sum; on a GPU each
also runs a small matmul burn-in checked against a float64 CPU reference. One
JSON line on stdout says how it went; the exit code is 0 when it passed.
"""

from __future__ import annotations

import json
import os
import sys
import time
from datetime import timedelta

BURN_IN_SIZE = 1024
BURN_IN_ROUNDS = 8
BURN_IN_RTOL = 1e-3


def burn_in(device: object) -> str | None:
    """A matmul on `device` against a float64 CPU reference; the mismatch, or None when it agrees."""
    import torch

    g = torch.Generator().manual_seed(1234)
    a = torch.randn(BURN_IN_SIZE, BURN_IN_SIZE, generator=g)
    ref = (a.double() @ a.double()).float()
    torch.backends.cuda.matmul.allow_tf32 = False
    dev = a.to(device)
    for i in range(BURN_IN_ROUNDS):
        out = (dev @ dev).cpu()
        if not torch.allclose(out, ref, rtol=BURN_IN_RTOL, atol=BURN_IN_RTOL * float(ref.abs().max())):
            err = float((out - ref).abs().max())
            return f"GPU burn-in failed: matmul result differs from the reference by {err:.3g} in round {i + 1}"
    return None


def check(timeout_s: float) -> tuple[bool, str]:
    import torch
    import torch.distributed as dist

    rank, world = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
    use_cuda = torch.cuda.is_available() and os.environ.get("CUDA_VISIBLE_DEVICES", "") != ""
    device = torch.device("cuda", 0) if use_cuda else torch.device("cpu")
    if use_cuda:
        torch.cuda.set_device(device)
        bad = burn_in(device)
        if bad:
            return False, bad
    dist.init_process_group("nccl" if use_cuda else "gloo", rank=rank, world_size=world,
                            timeout=timedelta(seconds=timeout_s))
    try:
        t = torch.full((1024,), float(rank + 1), device=device)
        dist.all_reduce(t)
        want = world * (world + 1) / 2
        got = t.cpu()
        if not torch.all(got == want):
            return False, f"all-reduce of a known tensor gave {float(got[0]):g}, expected {want:g}"
        return True, f"all-reduce over {world} ranks agreed" + (" and GPU burn-in passed" if use_cuda else "")
    finally:
        dist.destroy_process_group()


def main() -> int:
    t0 = time.time()
    try:
        ok, msg = check(float(os.environ.get("PREFLIGHT_TIMEOUT_S", "30")))
    except Exception as e:  # a rendezvous or backend failure is this rank's answer, not a traceback
        ok, msg = False, f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"
    print(json.dumps({"ok": ok, "message": msg, "seconds": time.time() - t0, "at": time.time()}), flush=True)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
