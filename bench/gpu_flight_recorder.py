"""GPU check of the NCCL flight-recorder parsing: real NCCL dumps read by `trainer.flight_recorder`.

    python bench/gpu_flight_recorder.py      # on a machine with CUDA; prints one line and exits 0 without

With one GPU (NCCL cannot put two ranks on one GPU): a single-rank NCCL group
runs all-reduces, then one queued behind a long kernel (`torch.cuda._sleep`),
dumps its recorder in both forms (`_dump_nccl_trace_json`, and the pickle
`_dump_nccl_trace` the watchdog writes to its file), and checks that the
parser reports the pending all-reduce as the one the rank waits in and the
earlier ones as completed; a second process with TORCH_FR_BUFFER_SIZE=0 checks
that the recorder reads as empty. With two or more GPUs, also: every rank but
the last enters an all-reduce the last (its host stalled) has not, each dumps
its recorder, and the hang attribution over the parsed dumps must name the
last rank. Writes bench/results/gpu_flight_recorder.json and the raw dumps
beside it (bench/results/gpu_flight_recorder/).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
OUT = ROOT / "bench" / "results"
STALL_S = 4.0
OFF_PROBE = "--off-probe"


def _init(rank: int, world: int, init_file: str) -> Any:
    import torch
    import torch.distributed as dist

    torch.cuda.set_device(rank)
    dist.init_process_group("nccl", init_method=f"file://{init_file}", rank=rank, world_size=world,
                            device_id=torch.device("cuda", rank))
    return torch, dist


def single_rank(init_file: str) -> dict[str, Any]:
    """One rank: completed all-reduces, then one queued behind a long kernel; both dump forms parsed."""
    from trainer.flight_recorder import load_dump_file, loads_dump, parse_flight_record

    torch, dist = _init(0, 1, init_file)
    x = torch.ones(1024, device="cuda")
    for _ in range(5):
        dist.all_reduce(x)
    torch.cuda.synchronize()
    torch.cuda._sleep(int(2e9))  # ~1 s of GPU time on the current stream; NCCL's stream waits for it
    dist.all_reduce(x)
    raw_json = torch._C._distributed_c10d._dump_nccl_trace_json(includeCollectives=True, onlyActive=False)
    raw_pickle = torch._C._distributed_c10d._dump_nccl_trace(includeCollectives=True, includeStackTraces=False,
                                                             onlyActive=False)
    torch.cuda.synchronize()
    dump_dir = OUT / "gpu_flight_recorder"
    dump_dir.mkdir(parents=True, exist_ok=True)
    (dump_dir / "single-rank.json").write_text(json.dumps(json.loads(raw_json), indent=1, sort_keys=True))
    (dump_dir / "nccl_trace_rank_0").write_bytes(raw_pickle)
    pj = parse_flight_record(loads_dump(raw_json), {}, rank=0)
    pp = parse_flight_record(load_dump_file(dump_dir / "nccl_trace_rank_0"), {}, rank=0)
    world = next(iter(pj.collectives.values()), {})
    checks = {
        "backend_nccl": pj.recorder.get("backend") == "nccl",
        "json_and_pickle_agree": pj.collectives == pp.collectives,
        "waits_in_the_sixth": world.get("enqueued") == 6 and world.get("completed") == 5,
        "op_named": world.get("op") == "nccl:all_reduce",
    }
    dist.destroy_process_group()
    return {"collectives": pj.collectives, "entries": pj.recorder.get("entries"), "checks": checks}


def off_probe() -> int:
    """In a process started with TORCH_FR_BUFFER_SIZE=0: one all-reduce, then print the parsed recorder state."""
    from trainer.flight_recorder import loads_dump, parse_flight_record

    with tempfile.TemporaryDirectory() as d:
        torch, dist = _init(0, 1, f"{d}/init")
        dist.all_reduce(torch.ones(8, device="cuda"))
        torch.cuda.synchronize()
        p = parse_flight_record(loads_dump(torch._C._distributed_c10d._dump_nccl_trace_json()))
        dist.destroy_process_group()
    print(json.dumps(p.recorder))
    return 0


def recorder_off() -> dict[str, Any]:
    """A fresh process with TORCH_FR_BUFFER_SIZE=0 (torch reads it once, when the recorder is created)."""
    env = {**os.environ, "TORCH_FR_BUFFER_SIZE": "0"}
    r = subprocess.run([sys.executable, __file__, OFF_PROBE], env=env, capture_output=True, text=True, timeout=120)
    last = (r.stdout.strip().splitlines() or ["{}"])[-1]
    rec = json.loads(last) if r.returncode == 0 else {"error": r.stderr[-500:]}
    return {"recorder": rec, "checks": {"empty_when_off": rec.get("state") == "empty"}}


def stalled_rank(rank: int, world: int, init_file: str, dump_dir: str) -> None:
    """Ranks 0..world-2 enter an all-reduce; the last rank's host stalls first; all dump while they wait."""
    torch, dist = _init(rank, world, init_file)
    from trainer.flight_recorder import read_dump

    x = torch.ones(1 << 20, device="cuda")
    for _ in range(3):
        dist.all_reduce(x)
    torch.cuda.synchronize()
    dist.barrier()
    if rank != world - 1:
        dist.all_reduce(x)  # returns at once; the GPU waits for the last rank
    time.sleep(STALL_S)
    Path(dump_dir, f"rank{rank}.json").write_text(json.dumps(read_dump("nccl")))
    if rank == world - 1:
        dist.all_reduce(x)
    torch.cuda.synchronize()
    dist.destroy_process_group()


def stalled(world: int) -> dict[str, Any]:
    import torch.multiprocessing as mp

    from health.attribution import attribute
    from health.observations import RankObservation
    from trainer.flight_recorder import parse_flight_record

    with tempfile.TemporaryDirectory() as d:
        mp.start_processes(stalled_rank, args=(world, f"{d}/init", d), nprocs=world, start_method="spawn")
        dumps = {r: json.loads(Path(d, f"rank{r}.json").read_text()) for r in range(world)}
    dump_dir = OUT / "gpu_flight_recorder"
    dump_dir.mkdir(parents=True, exist_ok=True)
    for r, dump in dumps.items():
        (dump_dir / f"stalled-world{world}-rank{r}.json").write_text(json.dumps(dump, indent=1, sort_keys=True))
    obs = []
    for r, dump in dumps.items():
        p = parse_flight_record(dump, {}, rank=r)
        obs.append(RankObservation(rank=r, host="gpu", observed_at=time.time(), alive=True,
                                   collectives=p.collectives, p2p=tuple(p.p2p or ()), recorder=p.recorder))
    a = attribute(obs, {"dp": world})
    return {"world": world, "culprits": list(a.culprits), "certain": a.certain, "reason": a.reason,
            "checks": {"stalled_rank_named": a.culprits == (world - 1,) and a.certain}}


def main() -> int:
    if sys.argv[1:] == [OFF_PROBE]:
        return off_probe()
    try:
        import torch
    except ImportError:
        print("gpu_flight_recorder: torch is not installed; nothing to check")
        return 0
    if not torch.cuda.is_available() or not torch.distributed.is_nccl_available():
        print("gpu_flight_recorder: no CUDA device or no NCCL here; nothing to check (run it on a GPU machine)")
        return 0
    if not hasattr(torch._C._distributed_c10d, "_dump_nccl_trace_json"):
        print("gpu_flight_recorder: this torch build has no NCCL flight recorder dump")
        return 1
    n = torch.cuda.device_count()
    result: dict[str, Any] = {"torch": torch.__version__, "gpus": n, "gpu": torch.cuda.get_device_name(0),
                              "nccl": ".".join(map(str, torch.cuda.nccl.version())), "time": time.time()}
    with tempfile.TemporaryDirectory() as d:
        result["single_rank"] = single_rank(f"{d}/init")
    result["recorder_off"] = recorder_off()
    if n >= 2:
        result["stalled"] = stalled(min(n, 4))
    checks = {f"{k}.{c}": v for k, part in result.items() if isinstance(part, dict) and "checks" in part
              for c, v in part["checks"].items()}
    result["passed"] = all(checks.values())
    OUT.mkdir(parents=True, exist_ok=True)
    (OUT / "gpu_flight_recorder.json").write_text(json.dumps(result, indent=1, sort_keys=True, default=str))
    print(json.dumps({"passed": result["passed"], **checks}))
    return 0 if result["passed"] else 1


if __name__ == "__main__":
    sys.exit(main())
