"""Fault to detection, and fault to the first step after resume, on the example job.

    python bench/recovery.py [--runs 3] [--faults kill,hang]

Each run submits examples/job.yaml (embedded Ray, 4 ranks), injects one fault
with `orchestrator chaos` once training is under way (SIGKILL or SIGSTOP of
rank 1), waits for the first step after the resume, reads the interruption's
recorded times from the catalog, and stops the job. Reports medians.
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from bench.common import median, save  # noqa: E402
from orchestrator.catalog.db import as_utc  # noqa: E402
from orchestrator.catalog.repository import Catalog  # noqa: E402
from trainer.files import read_jsonl  # noqa: E402

ORCH = str(Path(sys.executable).parent / "orchestrator")


def _rows(run_dir: Path) -> list[dict]:
    return read_jsonl(run_dir / "metrics.jsonl")


def job_file(state: Path, warm_standby: bool) -> Path:
    """The example job, with warm standby rank processes on or off."""
    import yaml

    spec = yaml.safe_load((REPO / "examples" / "job.yaml").read_text())
    spec["reliability"]["warm_standby"] = warm_standby
    state.mkdir(parents=True, exist_ok=True)
    path = state / "job.yaml"
    path.write_text(yaml.safe_dump(spec))
    return path


def one_run(fault: str, state: Path, warm_standby: bool = True) -> dict[str, float]:
    env = dict(os.environ, ORCHESTRATOR_HOME=str(state))
    run_dir = state / "runs" / "example"
    proc = subprocess.Popen([ORCH, "submit", str(job_file(state, warm_standby))], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        deadline = time.time() + 300
        while not any(r["step"] >= 30 for r in _rows(run_dir)):
            if time.time() > deadline or proc.poll() is not None:
                raise RuntimeError("the job did not reach step 30")
            time.sleep(0.2)
        injected = time.time()
        subprocess.run([ORCH, "chaos", "kill" if fault == "kill" else "hang", "example", "--rank", "1"], env=env,
                       check=True, capture_output=True, timeout=120)
        cat = Catalog(f"sqlite:///{state / 'catalog.db'}")
        while True:
            rows = [i for i in cat.interruptions("example") if i.resumed_at is not None]
            if rows:
                break
            if time.time() > deadline + 300:
                raise RuntimeError("no resume recorded")
            time.sleep(0.5)
        i = rows[0]
        fault_at, detected, resumed = (as_utc(x).timestamp() for x in (i.fault_at, i.detected_at, i.resumed_at))
        return {"fault_to_detection_s": detected - fault_at, "fault_to_resume_s": resumed - fault_at,
                "command_to_fault_s": fault_at - injected, "category": i.category}
    finally:
        proc.send_signal(signal.SIGINT)  # Ctrl-C: the job stops cleanly, its embedded Ray ends
        try:
            proc.wait(timeout=180)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--faults", default="kill,hang")
    args = ap.parse_args()
    out: dict[str, dict] = {}
    for fault in args.faults.split(","):
        samples = []
        for _ in range(args.runs):
            with tempfile.TemporaryDirectory() as t:
                samples.append(one_run(fault, Path(t)))
        out[fault] = {"runs": samples,
                      "median_fault_to_detection_s": median([s["fault_to_detection_s"] for s in samples]),
                      "median_fault_to_resume_s": median([s["fault_to_resume_s"] for s in samples])}
        print(f"{fault}: detection {out[fault]['median_fault_to_detection_s']:.2f} s, "
              f"resume {out[fault]['median_fault_to_resume_s']:.2f} s (median of {len(samples)})", flush=True)
    print(save("recovery", {"job": "examples/job.yaml (4 ranks, embedded Ray)", "results": out}))


if __name__ == "__main__":
    main()
