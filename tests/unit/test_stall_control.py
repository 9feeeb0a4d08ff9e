"""The control file's stall: the rank blocks at the named point, alive, until the request is withdrawn."""

from __future__ import annotations

import json
import os
import threading
import time
from pathlib import Path

from trainer.launch import ControlFile


def _write(path: Path, obj: dict) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(obj))
    os.replace(tmp, path)
    # Make the change visible to an mtime check even within one timestamp tick.
    t = time.time() + 1
    os.utime(path, (t, t))


def test_stall_blocks_at_its_point_until_released(tmp_path: Path) -> None:
    path = tmp_path / "control.json"
    _write(path, {"stall": "backward"})
    c = ControlFile(path)
    c.before_step(7)
    c.at("forward")  # another point passes straight through
    done = threading.Event()
    t = threading.Thread(target=lambda: (c.at("backward"), done.set()), daemon=True)
    t.start()
    marker = tmp_path / "control.json.stalled"
    deadline = time.time() + 5
    while not marker.exists() and time.time() < deadline:
        time.sleep(0.02)
    rec = json.loads(marker.read_text())
    assert rec["point"] == "backward" and rec["step"] == 7 and rec["pid"] == os.getpid()
    assert not done.wait(0.5), "the stall ended on its own"
    _write(path, {})
    assert done.wait(5), "the stall was not released"
    assert json.loads(marker.read_text())["released"] >= rec["time"]


def test_stop_ends_a_stall(tmp_path: Path) -> None:
    path = tmp_path / "control.json"
    _write(path, {"stall": "step"})
    stop = threading.Event()
    c = ControlFile(path, stop)
    c.before_step(1)
    threading.Timer(0.3, stop.set).start()
    t0 = time.time()
    c.at("step")
    assert 0.2 < time.time() - t0 < 3
