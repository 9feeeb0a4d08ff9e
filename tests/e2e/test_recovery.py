"""Real faults injected into a running job; it must finish every step on its own.

Each test submits a small 4-rank job on the embedded Ray, injects faults one after the other with
`orchestrator chaos` (a per-step delay, SIGKILL, SIGSTOP, a stall of a live rank) or kill -9 of the
controller, and checks that the job completes, that the catalog holds one
interruption for the fault with the culprit rank and host and ordered times, and
that training resumed from the newest committed checkpoint.
"""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path
from typing import Any

import pytest

from orchestrator.catalog.db import as_utc
from orchestrator.catalog.repository import Catalog
from tests.cli import metrics_rows, orch, orch_json, slow_down, start_submit, wait_for
from tests.conftest import small_job, write_job

pytestmark = [pytest.mark.slow, pytest.mark.timeout(600)]
STEPS = 50


def _run_with_fault(tmp_path: Path, env: dict[str, str], state_dir: Path, name: str, inject,
                    steps: int = STEPS, layout: dict[str, int] | None = None, inject_after: int = 10) -> Catalog:
    job = write_job(tmp_path / "job.yaml", small_job(name, **(layout or {"dp": 4}), steps=steps, interval=5,
                                                       reliability={"hang_timeout_s": 60, "max_restarts": 3}))
    log = tmp_path / "submit.log"
    proc = start_submit(job, env, log=log)
    run_dir = state_dir / "runs" / name
    try:
        wait_for(lambda: any(x["step"] >= inject_after for x in metrics_rows(run_dir)), 240, f"step {inject_after}")
        inject()
        assert proc.wait(timeout=400) == 0, log.read_text()[-3000:]
    finally:
        if proc.poll() is None:
            proc.kill()
    st = orch_json(["status", name], env)
    assert st["state"] == "succeeded" and st["step"] == steps
    return Catalog(f"sqlite:///{state_dir / 'catalog.db'}")


def _check_resume(i: Any, run_dir: Path) -> None:
    """Interruption `i` was followed by an attempt that resumed right after a committed step, times in order."""
    rows = metrics_rows(run_dir)
    after = [x for x in rows if x["attempt"] == i.attempt + 1]
    assert after and after[0]["step"] == i.resume_step + 1
    assert i.resume_step % 5 == 0 and i.resume_step <= i.step_at_fault
    t = [as_utc(x) for x in (i.fault_at, i.detected_at, i.stopped_at, i.resumed_at)]
    assert all(t), t
    assert t[0] <= t[1] <= t[2] <= t[3]


def _standby_pids() -> set[int]:
    """Processes started as warm standbys now alive on this machine (waiting, or activated as trainers)."""
    out = set()
    for p in Path("/proc").iterdir():
        if p.name.isdigit():
            try:
                cmd = (p / "cmdline").read_bytes().split(b"\0")
            except OSError:
                continue
            if b"trainer.launch" in cmd and b"--standby" in cmd:
                out.add(int(p.name))
    return out


def test_a_straggler_a_killed_rank_a_stopped_one_and_a_killed_controller(
        tmp_path: Path, cli_env: dict[str, str], state_dir: Path) -> None:
    """One job, four faults in turn, each once the job trains again after the one before:

    1. rank 3 sleeps before every step: it is flagged as a straggler and the job goes on (no restart);
    2. SIGKILL of rank 2: the crash is found at once and the restart runs in place on the standby processes
       the supervisors had ready;
    3. SIGSTOP of rank 1: the hang is found in about 3 s with the stopped rank named;
    4. kill -9 of the job's controller: Ray restarts it, it records the attempt as lost, no rank of the old
       attempt is left behind, and the job resumes from the newest committed checkpoint.
    Each is recorded and the job finishes every step.
    """
    name = "fault-ks"
    run_dir = state_dir / "runs" / name
    cat = Catalog(f"sqlite:///{state_dir / 'catalog.db'}")
    standby: set[int] = set()
    stopped_at: list[float] = []
    old_pids: list[int] = []

    def attempt_steps(n: int) -> int:
        return len([x for x in metrics_rows(run_dir) if x["attempt"] == n])

    def inject() -> None:
        slow_down(run_dir, ranks=4, delay_s=0.2)  # the first two faults land before the job ends, however loaded
        r = orch(["chaos", "slow", name, "--rank", "3", "--delay-s", "0.5"], cli_env)
        assert r.returncode == 0, r.stderr
        wait_for(lambda: any(i.kind == "straggler" for i in cat.interruptions(name)), 120, "the straggler found")
        # One standby per rank is started once training is under way (the attempt's own trainers were standbys too).
        def waiting() -> set[int]:
            trainers = {r.pid for r in cat.job_status(name).current_ranks}
            left = _standby_pids() - trainers
            return left if len(left) == 4 else set()

        standby.update(wait_for(waiting, 60, "4 standbys"))
        r = orch(["chaos", "kill", name, "--rank", "2"], cli_env)
        assert r.returncode == 0, r.stderr
        wait_for(lambda: attempt_steps(2) >= 3, 240, "three steps of the second attempt")
        stopped_at.append(time.time())
        r = orch(["chaos", "hang", name, "--rank", "1"], cli_env)
        assert r.returncode == 0, r.stderr
        wait_for(lambda: attempt_steps(3) >= 3, 240, "three steps of the third attempt")
        slow_down(run_dir, ranks=4, delay_s=0.2)  # the dead controller's ranks train on until its successor ends them
        st = orch_json(["status", name], cli_env)
        assert st["attempt"] == 3, st
        old_pids.extend(r["pid"] for r in st["ranks"])
        os.kill(_controller_pid(state_dir), signal.SIGKILL)

    # The straggler's window of steps fills sooner the sooner it starts: from the second step on.
    _run_with_fault(tmp_path, cli_env, state_dir, name, inject, steps=130, inject_after=2)
    [slow] = [i for i in cat.interruptions(name) if i.kind == "straggler"]
    killed, hung, lost = [i for i in cat.interruptions(name) if i.kind != "straggler"]
    job = cat.require_job(name)
    assert [a.state for a in job.attempts][2:] == ["lost", "succeeded"], [a.state for a in job.attempts]

    assert slow.ranks == [3] and slow.hosts and slow.attempt == 1
    assert slow.evidence["finding"]["score"] > 6
    assert killed.attempt == 1, "the straggler alone must not restart the job"

    assert killed.kind == "crash" and not killed.planned
    assert killed.ranks == [2] and killed.hosts and "SIGKILL" in killed.explanation
    assert (as_utc(killed.detected_at) - as_utc(killed.fault_at)).total_seconds() < 5
    assert {r.pid for r in job.attempts[1].ranks} == standby, "the restart must run on the warm standbys"
    _check_resume(killed, run_dir)

    assert hung.kind == "hang" and hung.ranks == [1] and hung.attempt == 2
    assert "stopped" in hung.explanation and "wait in" in hung.explanation
    fault, detected = as_utc(hung.fault_at).timestamp(), as_utc(hung.detected_at).timestamp()
    assert fault >= stopped_at[0] - 1.0, "the fault time predates the injection"
    # A rank seen stopped twice, its peers beaconing since, is a hang at once (the old rule's 5-s floor alone
    # exceeded 4 s).
    assert detected - fault < 4, f"hang detected {detected - fault:.1f} s after the rank stopped"
    assert hung.evidence["finding"]["evidence"]["limit_s"] < 5, hung.evidence["finding"]["evidence"]["limit_s"]
    _check_resume(hung, run_dir)

    assert lost.kind == "controller_lost" and lost.attempt == 3
    for pid in old_pids:  # no rank of the dead controller is left behind
        assert not Path(f"/proc/{pid}").exists() or "Z" in Path(f"/proc/{pid}/stat").read_text().split(")")[1][:3]
    _check_resume(lost, run_dir)


def test_stalled_live_rank_is_named_in_a_pipelined_layout(tmp_path: Path, cli_env: dict[str, str],
                                                          state_dir: Path) -> None:
    """tp=2 · pp=2: rank 3 stops in its forward pass, alive (no SIGSTOP); the hang names rank 3, not rank 0.

    Only the detection is checked here (the restart is the other tests' business): with no restart
    allowed, the job ends as failed once the hang is recorded.
    """
    name = "fault-stall"
    # This layout's steps are short: enough of them that the stall lands before the job ends.
    job = write_job(tmp_path / "job.yaml", small_job(name, dp=1, tp=2, pp=2, steps=150, interval=5,
                                                       reliability={"hang_timeout_s": 60, "max_restarts": 0}))
    proc = start_submit(job, cli_env, log=tmp_path / "submit.log")
    try:
        wait_for(lambda: any(x["step"] >= 10 for x in metrics_rows(state_dir / "runs" / name)), 240, "step 10")
        cat = Catalog(f"sqlite:///{state_dir / 'catalog.db'}")
        r = orch(["chaos", "stall", name, "--rank", "3", "--where", "forward"], cli_env)
        assert r.returncode == 0, r.stderr
        hangs = wait_for(lambda: [i for i in cat.interruptions(name) if i.kind == "hang"], 180, "a hang")
        assert proc.wait(timeout=120) != 0, "the job ended without its hang"
    finally:
        if proc.poll() is None:
            proc.kill()
    [i] = hangs
    assert i.ranks == [3], i.explanation
    assert "rank 3" in i.explanation and "stopped" not in i.explanation, "the stalled rank's process was alive"
    assert "wait in" in i.explanation
    fault, detected = as_utc(i.fault_at).timestamp(), as_utc(i.detected_at).timestamp()
    limit = i.evidence["finding"]["evidence"]["limit_s"]
    assert 0 <= detected - fault <= limit + 2.0, (detected - fault, limit)


def _controller_pid(state_dir: Path) -> int:
    """The controller actor's pid, found the way an operator would: its process title."""
    for p in Path("/proc").iterdir():
        if not p.name.isdigit():
            continue
        try:
            cmd = (p / "cmdline").read_bytes().decode(errors="replace")
        except OSError:
            continue
        if "JobController" in cmd:
            return int(p.name)
    raise AssertionError("no controller process found")
