"""Real gloo ranks against real storage faults: a disk that fills during training, every checkpoint corrupt."""

from __future__ import annotations

import hashlib
import json
import threading
import time
from pathlib import Path

import pytest

from tests.disk import fill_disk, small_tmpfs
from tests.dist import metrics, run_ranks, tiny_cfg
from trainer.checkpoint import COMMIT_MARKER, committed_checkpoints, quarantined_checkpoints
from trainer.launch import EXIT_CHECKPOINT_UNREADABLE

pytestmark = pytest.mark.timeout(300)


def _hashes(d: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(d.iterdir())}


def _wait(cond, timeout_s: float, what: str):
    deadline = time.time() + timeout_s
    while time.time() < deadline:
        got = cond()
        if got:
            return got
        time.sleep(0.02)
    raise AssertionError(f"timed out waiting for {what}")


def _beacon(run: Path, rank: int = 0) -> dict:
    try:
        return json.loads((run / f"beacon-{rank}.json").read_text())
    except (OSError, ValueError):
        return {}


def test_disk_full_during_training_skips_one_save_and_training_goes_on(tmp_path: Path) -> None:
    run = tmp_path / "run"
    cfg = tiny_cfg(steps=16, interval=4)
    seen: dict[str, object] = {}

    def inject(disk: Path) -> None:
        step4 = disk / "step-00000004"
        _wait(lambda: (step4 / COMMIT_MARKER).is_file(), 120, "the step-4 commit")
        seen["step4"] = _hashes(step4)
        filler = fill_disk(disk)
        _wait(lambda: _beacon(run).get("checkpoint_failures", 0) >= 1, 60, "a failed save in rank 0's beacon")
        filler.unlink()

    with small_tmpfs(tmp_path / "disk", "8m") as disk:
        injector = threading.Thread(target=lambda: seen.update(error=_catch(inject, disk)), daemon=True)
        injector.start()
        r = run_ranks(cfg, run, ckpt_dir=disk, control={i: {"step_delay_s": 0.25} for i in range(2)})
        injector.join(timeout=60)
        assert seen.get("error") is None, seen["error"]
        assert r.returncodes == [0, 0], Path(r.logs[0]).read_text()[-3000:]
        assert [c.step for c in committed_checkpoints(disk)] == [4, 12, 16]
        assert _hashes(disk / "step-00000004") == seen["step4"], "the last commit was changed by the failed save"
        assert [p.name for p in disk.iterdir() if p.name.startswith(".")] == []
    beacon = _beacon(run)
    assert beacon["checkpoint_failures"] == 1 and beacon["checkpoint_failed_step"] == 8
    assert "No space left on device" in beacon["checkpoint_error"]
    assert beacon["checkpoint_step"] == 16 and beacon["phase"] == "done"
    assert [x["step"] for x in metrics(run)] == list(range(1, 17)), "training must go on through the failed save"
    assert "No space left on device" in Path(r.logs[0]).read_text()


def _catch(fn, *args) -> str | None:
    try:
        fn(*args)
    except BaseException as e:  # reported by the test thread
        return repr(e)
    return None


def _flip_bytes(d: Path) -> None:
    for shard in d.glob("*.distcp"):
        data = bytearray(shard.read_bytes())
        mid = len(data) // 2
        data[mid : mid + 4] = bytes(b ^ 0x5A for b in data[mid : mid + 4])
        shard.write_bytes(bytes(data))


def test_every_checkpoint_corrupt_fails_with_the_reason_and_writes_no_step(tmp_path: Path) -> None:
    ckpt = tmp_path / "ckpt"
    r = run_ranks(tiny_cfg(steps=10, async_save=False), tmp_path, control={i: {"exit_at_step": 9} for i in range(2)})
    assert r.returncodes == [1, 1]
    assert [c.step for c in committed_checkpoints(ckpt)] == [4, 8]
    for c in committed_checkpoints(ckpt):
        _flip_bytes(c.path)
    rows_before = len(metrics(tmp_path))
    for attempt in (2, 3):
        r = run_ranks(tiny_cfg(steps=10, async_save=False), tmp_path, attempt=attempt)
        assert r.returncodes == [EXIT_CHECKPOINT_UNREADABLE] * 2
        assert r.returncodes[0] not in (0, 1)
        log = Path(r.logs[0]).read_text()
        errors = [ln for ln in log.splitlines() if " ERROR " in ln]
        assert len(errors) == 1 and "checkpoint load failed" in errors[0], log[-3000:]
        assert "not starting over from step 0" in errors[0]
        if attempt == 2:
            assert "step-00000008" in errors[0] and "step-00000004" in errors[0]
            assert "checksum mismatch" in errors[0]
        else:
            assert "quarantined" in errors[0]
        assert "Traceback" not in log
    assert committed_checkpoints(ckpt) == []
    quarantined = quarantined_checkpoints(ckpt)
    assert sorted(q.name.split(".")[0] for q in quarantined) == ["step-00000004", "step-00000008"]
    for q in quarantined:
        assert any(q.glob("*.distcp")) and (q / ".metadata").is_file(), "quarantined, not deleted"
        assert "checksum mismatch" in json.loads(q.with_name(q.name + ".json").read_text())["reason"]
    assert len(metrics(tmp_path)) == rows_before, "no step may be trained again"
    assert [p.name for p in ckpt.iterdir() if p.name.startswith(("step-", ".tmp"))
            and ".quarantined-" not in p.name] == []
