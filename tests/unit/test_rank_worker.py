"""The rank supervisor's own logic, without Ray: warm standby on and off, the preflight in the standby."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from orchestrator.controller import worker as worker_mod
from orchestrator.controller.worker import RankWorker


@pytest.fixture(autouse=True)
def no_ray(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(worker_mod.ray, "get_gpu_ids", lambda: [])
    monkeypatch.setattr(worker_mod.ray.util, "get_node_ip_address", lambda: "127.0.0.1")


def _training(w: RankWorker, tmp_path: Path) -> subprocess.Popen:
    w.proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    w.beacon_path.parent.mkdir(parents=True, exist_ok=True)
    w.beacon_path.write_text(json.dumps({"phase": "train", "step": 3, "time": 0}))
    return w.proc


@pytest.mark.parametrize("warm", [True, False])
def test_a_standby_is_prepared_only_when_warm_standby_is_on(tmp_path: Path, warm: bool) -> None:
    w = RankWorker("job", 0, str(tmp_path), warm_standby=warm)
    # The first attempt's process is started with the supervisor (it imports torch during the preflight).
    first = w.standby
    assert (first is not None) is warm
    w.release()  # let it go (end of input): the running attempt starts the next one
    if first is not None:
        assert first.wait(timeout=60) == 0
    proc = _training(w, tmp_path)
    try:
        state = w.poll()
        assert state["running"] and state["beacon"]["step"] == 3
        assert (w.standby is not None) is warm
        if warm:
            assert "--standby" in w.standby.args
    finally:
        w.release()
        if w.standby is not None:
            w.standby.kill()
        proc.kill()
        proc.wait()
    if warm:
        # End of input tells the standby it is not needed; it goes without being killed.
        sb = subprocess.Popen([sys.executable, "-m", "trainer.launch", "--standby"], stdin=subprocess.PIPE)
        sb.stdin.close()
        assert sb.wait(timeout=60) == 0


def _one_rank_env() -> dict[str, str]:
    from trainer.ports import free_port

    return {"RANK": "0", "WORLD_SIZE": "1", "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(free_port())}


def test_the_preflight_runs_in_the_standby_that_then_stays_ready(tmp_path: Path) -> None:
    w = RankWorker("job", 0, str(tmp_path), warm_standby=True, cpus=1)
    sb = w.standby
    try:
        assert sb is not None
        ans = w.preflight(_one_rank_env(), timeout_s=60)
        assert ans["ok"] and ans["message"] == "all-reduce over 1 ranks agreed", ans
        assert ans["pid"] == sb.pid, "the check ran in the rank's standby process"
        ans = w.preflight(_one_rank_env(), timeout_s=60)  # a second check in the same process
        assert ans["ok"] and ans["pid"] == sb.pid
        assert w.standby is sb and sb.poll() is None
        assert not list((tmp_path / "preflight").iterdir()), "answers are removed once read"
    finally:
        w.release()
        if sb is not None:
            assert sb.wait(timeout=60) == 0


def test_a_standby_stuck_in_the_preflight_fails_it_and_is_dropped(tmp_path: Path) -> None:
    w = RankWorker("job", 0, str(tmp_path), warm_standby=True)
    sb = w.standby
    assert sb is not None
    os.kill(sb.pid, signal.SIGSTOP)
    try:
        ans = w.preflight(_one_rank_env(), timeout_s=3)
        assert not ans["ok"] and "no preflight answer from the rank's process within 3 s" in ans["message"]
        assert w.standby is None and sb.wait(timeout=10) == -signal.SIGKILL
    finally:
        if sb.poll() is None:
            sb.kill()
            sb.wait()


def test_without_a_standby_the_supervisor_runs_the_preflight(tmp_path: Path) -> None:
    w = RankWorker("job", 0, str(tmp_path), warm_standby=False)
    ans = w.preflight(_one_rank_env(), timeout_s=60)
    assert ans["ok"] and ans["pid"] == os.getpid()
