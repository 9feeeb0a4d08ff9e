"""Drive the real `orchestrator` console script in a subprocess."""

from __future__ import annotations

import json
import signal
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from tests.conftest import BIN
from trainer.files import read_jsonl

ORCH = str(BIN / "orchestrator")


def orch(args: list[str], env: dict[str, str], timeout_s: float = 300) -> subprocess.CompletedProcess[str]:
    return subprocess.run([ORCH, *args], env=env, capture_output=True, text=True, timeout=timeout_s)


def orch_json(args: list[str], env: dict[str, str]) -> Any:
    r = orch([*args, "--json"], env)
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout)


def start_submit(job_file: Path, env: dict[str, str], *extra: str, log: Path) -> subprocess.Popen[bytes]:
    # Ctrl-C as from a terminal: a shell without job control starts background commands (a CI script's `&`)
    # with SIGINT ignored, and the submitter would inherit that.
    return subprocess.Popen([ORCH, "submit", str(job_file), *extra], env=env, stdout=open(log, "wb"),  # noqa: SIM115
                            stderr=subprocess.STDOUT, start_new_session=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))


def wait_for(cond: Callable[[], Any], timeout_s: float, what: str, interval_s: float = 0.3) -> Any:
    deadline = time.time() + timeout_s
    while time.time() < deadline:
        v = cond()
        if v:
            return v
        time.sleep(interval_s)
    raise TimeoutError(f"timed out after {timeout_s:.0f} s waiting for {what}")


def metrics_rows(run_dir: Path) -> list[dict[str, Any]]:
    return read_jsonl(run_dir / "metrics.jsonl")


def interrupt(proc: subprocess.Popen[bytes]) -> None:
    proc.send_signal(signal.SIGINT)


def slow_down(run_dir: Path, ranks: int, delay_s: float = 0.1) -> None:
    """Every rank of the job's running attempt sleeps `delay_s` before each step (the same for all: no
    straggler), so that a fault lands where a test needs it in the job on a fast or a loaded machine.

    Merged into the rank's control file (other requests there stay), atomically: the trainer re-reads it."""
    for r in range(ranks):
        path = run_dir / "control" / f"rank-{r:05d}.json"
        try:
            current = json.loads(path.read_text())
        except (OSError, ValueError):
            current = {}
        tmp = path.with_name(path.name + ".test-tmp")
        tmp.write_text(json.dumps({**current, "step_delay_s": delay_s}))
        tmp.replace(path)
