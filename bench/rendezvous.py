"""What `init_process_group` costs ranks that start together, as on a restart onto warm standbys.

    python bench/rendezvous.py [--world 4] [--runs 7]

Each run starts `--world` processes that import torch, then sleep until one
common instant and call `init_process_group("gloo")` with rank 0 hosting the
TCPStore (torch's default libuv server). Per run and variant, the slowest
rank's time from that instant until its process group is up (bimodal: fast
unless a client reached rank 0's port before its server listened): `plain` connects
at once (as torch does), `wait` first waits until rank 0's port accepts
(`trainer.rendezvous.wait_for_store`, what the trainer and preflight do), and
`rank0_late` is `wait` with rank 0 starting 0.3 s after the others (a slow
rank 0 costs what it costs, no back-off on top). Variants alternate within
each run, so both see the same machine. Medians, means, the runs that lost a back-off and the ratio of means go to
bench/results/rendezvous.json.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from bench.common import machine, median, save  # noqa: E402
from trainer.ports import free_port  # noqa: E402

BACKED_OFF_S = 0.2
VARIANTS = {"plain": (False, 0.0), "wait": (True, 0.0), "rank0_late": (True, 0.3)}


def rank_main(rank: int, world: int, port: int, start_at: float, wait: bool, rank0_delay: float) -> None:
    import torch.distributed as dist

    from trainer.rendezvous import wait_for_store

    time.sleep(max(0.0, start_at + (rank0_delay if rank == 0 else 0.0) - time.time()))
    t0 = time.time()
    if wait and rank != 0:
        wait_for_store("127.0.0.1", port, 60)
    dist.init_process_group("gloo", rank=rank, world_size=world, init_method=f"tcp://127.0.0.1:{port}")
    print(json.dumps({"rank": rank, "started": t0, "up": time.time()}), flush=True)
    os._exit(0)


def one(world: int, wait: bool, rank0_delay: float) -> float:
    """Seconds from the common start until the last rank's process group is up."""
    start_at = time.time() + 4.0  # every process has imported torch by then
    port = free_port()
    procs = [subprocess.Popen([sys.executable, __file__, "--rank", str(r), "--world", str(world), "--port", str(port),
                               "--start-at", str(start_at), "--wait", str(int(wait)),
                               "--rank0-delay", str(rank0_delay)], stdout=subprocess.PIPE, text=True, cwd=REPO)
             for r in range(world)]
    out = [json.loads(p.communicate(timeout=120)[0].strip().splitlines()[-1]) for p in procs]
    return max(o["up"] for o in out) - start_at


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--world", type=int, default=4)
    ap.add_argument("--runs", type=int, default=7)
    ap.add_argument("--rank", type=int, default=None, help=argparse.SUPPRESS)
    ap.add_argument("--port", type=int, default=0, help=argparse.SUPPRESS)
    ap.add_argument("--start-at", type=float, default=0.0, help=argparse.SUPPRESS)
    ap.add_argument("--wait", type=int, default=0, help=argparse.SUPPRESS)
    ap.add_argument("--rank0-delay", type=float, default=0.0, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.rank is not None:
        rank_main(args.rank, args.world, args.port, args.start_at, bool(args.wait), args.rank0_delay)
        return
    times: dict[str, list[float]] = {v: [] for v in VARIANTS}
    for _ in range(args.runs):
        for name, (wait, delay) in VARIANTS.items():
            times[name].append(one(args.world, wait, delay))
    med = {k: median(v) for k, v in times.items()}
    mean = {k: sum(v) / len(v) for k, v in times.items()}
    # Bimodal: a run is fast unless a client beat the server to its port, then it loses the client's back-off.
    backed_off = {k: sum(1 for x in v if x > BACKED_OFF_S) for k, v in times.items()}
    result = {"machine": machine(), "world": args.world, "runs": args.runs, "seconds": times, "median_s": med,
              "mean_s": mean, f"runs_over_{BACKED_OFF_S}_s": backed_off,
              "plain_over_wait_mean": mean["plain"] / mean["wait"] if mean["wait"] > 0 else None,
              "libuv": os.environ.get("USE_LIBUV", "1") != "0"}
    print(json.dumps({k: result[k] for k in ("median_s", "mean_s", f"runs_over_{BACKED_OFF_S}_s",
                                             "plain_over_wait_mean")}, indent=1))
    print(f"raw results: {save('rendezvous', result)}")


if __name__ == "__main__":
    main()
