"""The checkpointer in one process: commits by rename with checksums, survives a full disk, quarantines corruption."""

from __future__ import annotations

import hashlib
import json
import logging
from pathlib import Path

import pytest
import torch

from tests.disk import fill_disk, small_tmpfs
from trainer.checkpoint import (
    COMMIT_MARKER,
    Checkpointer,
    CheckpointLoadError,
    committed_checkpoints,
    quarantined_checkpoints,
)


def _model(seed: int) -> tuple[torch.nn.Module, torch.optim.Optimizer]:
    torch.manual_seed(seed)
    m = torch.nn.Linear(32, 32)
    return m, torch.optim.AdamW(m.parameters(), lr=0.01)


def _save(ck: Checkpointer, step: int, seed: int) -> torch.Tensor:
    m, o = _model(seed)
    ck.save(step, m, o, {"step": step, "sample": step * 8}, {"attempt": 1})
    ck.wait()
    return m.weight.detach().clone()


def _load(folder: Path) -> tuple[object, torch.Tensor, dict]:
    m, o = _model(999)
    extra = {"step": 0, "sample": 0}
    info = Checkpointer(folder, keep_last=5, async_save=False, rank=0).load_latest(m, o, extra)
    return info, m.weight.detach().clone(), extra


def _hashes(d: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(d.iterdir())}


def _hidden(folder: Path) -> list[str]:
    return [p.name for p in folder.iterdir() if p.name.startswith(".")]


@pytest.fixture
def disk(tmp_path: Path):
    with small_tmpfs(tmp_path / "disk", "2m") as d:
        yield d


@pytest.mark.parametrize("async_save", [False, True])
def test_commit_records_every_file_and_loads(tmp_path: Path, async_save: bool) -> None:
    ck = Checkpointer(tmp_path, keep_last=2, async_save=async_save, rank=0)
    for step in (2, 4, 6):
        w = _save(ck, step, seed=step)
    ck.close()
    assert [c.step for c in committed_checkpoints(tmp_path)] == [4, 6]  # keep_last=2 pruned step 2
    assert _hidden(tmp_path) == []
    newest = committed_checkpoints(tmp_path)[-1]
    files = json.loads((newest.path / COMMIT_MARKER).read_text())["files"]
    on_disk = {k: v for k, v in _hashes(newest.path).items() if k != COMMIT_MARKER}
    assert {k: v["sha256"] for k, v in files.items()} == on_disk
    info, got, extra = _load(tmp_path)
    assert info.step == 6 and extra == {"step": 6, "sample": 48}
    assert torch.equal(got, w)


def test_disk_full_save_fails_keeps_the_last_commit_and_a_later_save_commits(disk: Path, caplog) -> None:
    failures: list[tuple[int, str, int, int]] = []
    ck = Checkpointer(disk, keep_last=3, async_save=False, rank=0,
                      on_failure=lambda *a: failures.append(a))
    w2 = _save(ck, 2, seed=2)
    before = _hashes(committed_checkpoints(disk)[-1].path)
    filler = fill_disk(disk)
    with caplog.at_level(logging.WARNING):
        for step in (4, 6, 8):
            _save(ck, step, seed=step)
    assert [f[0] for f in failures] == [4, 6, 8]
    assert all("No space left on device" in f[1] for f in failures)
    assert [f[3] for f in failures] == [1, 2, 3]
    assert any(r.levelno == logging.ERROR and "NO CHECKPOINT COMMITTED" in r.getMessage() for r in caplog.records)
    assert [c.step for c in committed_checkpoints(disk)] == [2]
    assert _hashes(committed_checkpoints(disk)[-1].path) == before
    assert _hidden(disk) == [], "a failed save must remove its partial folder"
    filler.unlink()
    w10 = _save(ck, 10, seed=10)
    ck.close()
    assert [c.step for c in committed_checkpoints(disk)] == [2, 10]
    assert ck.consecutive_failures == 0 and ck.failures == 3
    info, got, _ = _load(disk)
    assert info.step == 10 and torch.equal(got, w10) and not torch.equal(w2, w10)


def test_failed_resave_of_a_committed_step_leaves_the_old_commit(disk: Path) -> None:
    ck = Checkpointer(disk, keep_last=3, async_save=False, rank=0)
    old = _save(ck, 4, seed=1)
    before = _hashes(committed_checkpoints(disk)[-1].path)
    filler = fill_disk(disk)
    _save(ck, 4, seed=2)  # a later attempt re-saves step 4 and dies half-way (disk full)
    assert ck.failures == 1
    assert _hashes(committed_checkpoints(disk)[-1].path) == before
    info, got, _ = _load(disk)
    assert info.step == 4 and torch.equal(got, old)
    filler.unlink()
    new = _save(ck, 4, seed=2)
    ck.close()
    assert _hidden(disk) == []
    _, got, _ = _load(disk)
    assert torch.equal(got, new) and not torch.equal(new, old)


def _flip_bytes(d: Path) -> None:
    shard = max((p for p in d.iterdir() if p.suffix == ".distcp"), key=lambda p: p.stat().st_size)
    data = bytearray(shard.read_bytes())
    mid = len(data) // 2
    data[mid : mid + 8] = bytes(b ^ 0xFF for b in data[mid : mid + 8])
    shard.write_bytes(bytes(data))


def test_corrupt_newest_is_quarantined_and_the_older_one_loads(tmp_path: Path) -> None:
    ck = Checkpointer(tmp_path, keep_last=3, async_save=False, rank=0)
    w2 = _save(ck, 2, seed=2)
    _save(ck, 4, seed=4)
    ck.close()
    _flip_bytes(committed_checkpoints(tmp_path)[-1].path)
    info, got, extra = _load(tmp_path)
    assert info.step == 2 and extra["step"] == 2 and torch.equal(got, w2)
    (q,) = quarantined_checkpoints(tmp_path)
    assert q.name.startswith("step-00000004.quarantined-") and any(q.glob("*.distcp"))
    note = json.loads(q.with_name(q.name + ".json").read_text())
    assert "checksum mismatch" in note["reason"]


def test_every_checkpoint_corrupt_refuses_to_start_over(tmp_path: Path) -> None:
    ck = Checkpointer(tmp_path, keep_last=3, async_save=False, rank=0)
    for step in (2, 4):
        _save(ck, step, seed=step)
    ck.close()
    for c in committed_checkpoints(tmp_path):
        _flip_bytes(c.path)
    with pytest.raises(CheckpointLoadError) as e:
        _load(tmp_path)
    msg = str(e.value)
    assert "\n" not in msg and "step-00000004" in msg and "step-00000002" in msg and "checksum mismatch" in msg
    assert committed_checkpoints(tmp_path) == []
    assert len(quarantined_checkpoints(tmp_path)) == 2
    # Only quarantined ones are left: still not a fresh start.
    with pytest.raises(CheckpointLoadError, match="quarantined"):
        _load(tmp_path)


def test_empty_folder_is_a_fresh_start(tmp_path: Path) -> None:
    info, _, extra = _load(tmp_path / "none")
    assert info is None and extra == {"step": 0, "sample": 0}



def test_uncommitted_folder_is_never_loaded_though_it_would_load(tmp_path: Path) -> None:
    ck = Checkpointer(tmp_path, keep_last=3, async_save=False, rank=0)
    w2 = _save(ck, 2, seed=2)
    w4 = _save(ck, 4, seed=4)
    ck.close()
    copy = tmp_path / "step-00000009"
    (tmp_path / "step-00000004").rename(copy)
    marker = (copy / COMMIT_MARKER).read_text()
    (copy / COMMIT_MARKER).unlink()
    info, got, _ = _load(tmp_path)
    assert info.step == 2 and torch.equal(got, w2)
    (copy / COMMIT_MARKER).write_text(marker)  # the control: the same folder, committed, is loaded
    info, got, _ = _load(tmp_path)
    assert info.step == 9 and torch.equal(got, w4)
