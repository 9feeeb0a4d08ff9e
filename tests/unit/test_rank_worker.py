"""The rank supervisor's own logic, without Ray: warm standby on and off."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from orchestrator.controller import worker as worker_mod
from orchestrator.controller.worker import RankWorker


@pytest.fixture(autouse=True)
def no_ray(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(worker_mod.ray, "get_gpu_ids", lambda: [])


def _training(w: RankWorker, tmp_path: Path) -> subprocess.Popen:
    w.proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    w.beacon_path.parent.mkdir(parents=True, exist_ok=True)
    w.beacon_path.write_text(json.dumps({"phase": "train", "step": 3, "time": 0}))
    return w.proc


@pytest.mark.parametrize("warm", [True, False])
def test_a_standby_is_prepared_only_when_warm_standby_is_on(tmp_path: Path, warm: bool) -> None:
    w = RankWorker("job", 0, str(tmp_path), warm_standby=warm)
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
