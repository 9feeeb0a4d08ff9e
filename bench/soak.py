"""ETTR under a storm of faults: the example job with a fault every T seconds until it ends.

    python bench/soak.py [--period-s 45] [--steps 800] [--configs fixed,auto] [--faults kill,hang]

Each configuration submits the example job (embedded Ray, 4 ranks) with
`training.steps` raised to --steps, then injects faults with `orchestrator chaos`
(the kinds in --faults, alternating, each on a random rank) every --period-s
seconds while it trains, and reads ETTR and the time lost by cause from
`orchestrator report --json` once the job has ended. Configurations run one
after the other in the same invocation, so they are compared on the same
machine at the same time:

- fixed: the example job as it is (checkpoints every 25 steps);
- auto:  `checkpoint.interval_steps: auto` (the interval chosen from the failures seen).

`--period-s 0` is the no-fault soak: it must record no interruption.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from bench.common import save  # noqa: E402
from trainer.files import read_jsonl  # noqa: E402

ORCH = str(Path(sys.executable).parent / "orchestrator")


def job_file(folder: Path, config: str, steps: int) -> Path:
    import yaml

    spec = yaml.safe_load((REPO / "examples" / "job.yaml").read_text())
    spec["training"]["steps"] = steps
    spec["reliability"]["max_restarts"] = 1000  # the storm is the point: never run out
    if config == "auto":
        spec["checkpoint"]["interval_steps"] = "auto"
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "job.yaml"
    path.write_text(yaml.safe_dump(spec))
    return path


def orch(args: list[str], env: dict[str, str], timeout_s: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run([ORCH, *args], env=env, capture_output=True, text=True, timeout=timeout_s)


def one(config: str, period_s: float, steps: int, faults: list[str], seed: int) -> dict[str, Any]:
    rng = random.Random(seed)
    with tempfile.TemporaryDirectory(prefix="soak-") as d:
        state = Path(d)
        env = dict(os.environ, ORCHESTRATOR_HOME=str(state))
        proc = subprocess.Popen([ORCH, "submit", str(job_file(state, config, steps))], env=env,
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
        injected: list[dict[str, Any]] = []
        rows_path = state / "runs" / "example" / "metrics.jsonl"
        started = time.time()
        next_fault = None
        try:
            while proc.poll() is None:
                time.sleep(0.5)
                if period_s <= 0 or not rows_path.exists():
                    continue
                if next_fault is None:
                    next_fault = time.time() + period_s
                if time.time() >= next_fault:
                    kind = faults[len(injected) % len(faults)]
                    rank = rng.randrange(4)
                    r = orch(["chaos", kind, "example", "--rank", str(rank)], env)
                    injected.append({"kind": kind, "rank": rank, "t": time.time() - started,
                                     "ok": r.returncode == 0, "out": (r.stdout + r.stderr).strip()[-200:]})
                    next_fault = time.time() + period_s
            rc = proc.wait()
        finally:
            if proc.poll() is None:
                proc.kill()
        rep = json.loads(orch(["report", "example", "--json"], env).stdout)["per_job"][0]
        incidents = json.loads(orch(["incidents", "list", "--json"], env).stdout)
        rows = read_jsonl(rows_path)
        return {"config": config, "period_s": period_s, "steps": steps, "exit_code": rc,
                "wall_s": time.time() - started, "faults_injected": sum(1 for f in injected if f["ok"]),
                "faults": injected, "interruptions_recorded": sum(1 for i in incidents
                                                                   if not i["planned"] and i["kind"] != "straggler"),
                "ettr": rep["ettr"], "time_lost_seconds": rep["time_lost_seconds"],
                "steps_redone": rep.get("steps_redone"), "final_step": max((r["step"] for r in rows), default=0),
                "state": rep["state"]}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--period-s", type=float, default=45.0)
    ap.add_argument("--steps", type=int, default=800)
    ap.add_argument("--configs", default="fixed,auto")
    ap.add_argument("--faults", default="kill,hang")
    ap.add_argument("--seed", type=int, default=7)
    args = ap.parse_args()
    results = []
    for config in args.configs.split(","):
        r = one(config, args.period_s, args.steps, args.faults.split(","), args.seed)
        print(f"{config}: ETTR {r['ettr']:.3f}, {r['faults_injected']} faults injected, "
              f"{r['interruptions_recorded']} recorded, state {r['state']}, "
              f"lost {json.dumps({k: round(v, 1) for k, v in r['time_lost_seconds'].items()})}", flush=True)
        results.append(r)
    name = "soak" if args.period_s > 0 else "soak_no_faults"
    print(f"raw results: {save(name, {'args': vars(args), 'results': results})}")


if __name__ == "__main__":
    main()
