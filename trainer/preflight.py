"""Preflight collective of one rank: all candidate ranks all-reduce a known tensor and check the sum.

On a GPU each rank first runs a small matmul burn-in checked against a float64
CPU reference. The check runs in the rank's warm standby process (started
with its supervisor, it goes on to train), else in the supervisor's process:
torch is imported once per rank, so a preflight costs a rendezvous, not an
interpreter; `python -m trainer.preflight` runs the same check from the
torch.distributed environment variables and prints one JSON line.
"""

from __future__ import annotations

import json
import os
import sys
import time
from datetime import timedelta

from trainer.rendezvous import wait_for_store

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


def check(rank: int, world: int, master_addr: str, master_port: int, timeout_s: float,
          use_cuda: bool = False) -> tuple[bool, str]:
    import torch
    import torch.distributed as dist

    device = torch.device("cuda", 0) if use_cuda else torch.device("cpu")
    if use_cuda:
        torch.cuda.set_device(device)
        bad = burn_in(device)
        if bad:
            return False, bad
    if rank != 0:
        wait_for_store(master_addr, master_port, timeout_s)
    pg_store = dist.TCPStore(master_addr, master_port, world, is_master=rank == 0,
                             timeout=timedelta(seconds=timeout_s))
    pg = dist.ProcessGroupGloo(pg_store, rank, world, timedelta(seconds=timeout_s)) if not use_cuda else None
    try:
        t = torch.full((1024,), float(rank + 1), device=device)
        if pg is not None:
            pg.allreduce([t]).wait()
        else:
            dist.init_process_group("nccl", store=pg_store, rank=rank, world_size=world,
                                    timeout=timedelta(seconds=timeout_s))
            dist.all_reduce(t)
        want = world * (world + 1) / 2
        got = t.cpu()
        if not torch.all(got == want):
            return False, f"all-reduce of a known tensor gave {float(got[0]):g}, expected {want:g}"
        return True, f"all-reduce over {world} ranks agreed" + (" and GPU burn-in passed" if use_cuda else "")
    finally:
        if use_cuda and dist.is_initialized():
            dist.destroy_process_group()


def run_check(rank: int, world: int, master_addr: str, master_port: int, timeout_s: float,
              use_cuda: bool = False) -> dict[str, object]:
    """`check` as a JSON-able answer; a rendezvous or backend failure is the rank's answer, not a traceback."""
    t0 = time.time()
    try:
        ok, msg = check(rank, world, master_addr, master_port, timeout_s, use_cuda)
    except Exception as e:
        ok, msg = False, f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"
    return {"ok": ok, "message": msg, "seconds": time.time() - t0, "at": time.time(), "pid": os.getpid()}


def run_request(env: dict[str, str], timeout_s: float, use_cuda: bool = False) -> dict[str, object]:
    """`run_check` for the torch.distributed variables in `env` (RANK, WORLD_SIZE, MASTER_ADDR, MASTER_PORT),
    over the interface `env` names (GLOO_SOCKET_IFNAME, NCCL_SOCKET_IFNAME) unless this process has one set."""
    for k in ("GLOO_SOCKET_IFNAME", "NCCL_SOCKET_IFNAME"):
        if env.get(k):
            os.environ.setdefault(k, env[k])
    return run_check(int(env["RANK"]), int(env["WORLD_SIZE"]), env["MASTER_ADDR"], int(env["MASTER_PORT"]),
                     timeout_s, use_cuda=use_cuda)


def main() -> int:
    import torch

    use_cuda = torch.cuda.is_available() and os.environ.get("CUDA_VISIBLE_DEVICES", "") != ""
    ans = run_check(int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"]), os.environ["MASTER_ADDR"],
                    int(os.environ["MASTER_PORT"]), float(os.environ.get("PREFLIGHT_TIMEOUT_S", "30")), use_cuda)
    print(json.dumps(ans), flush=True)
    return 0 if ans["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
