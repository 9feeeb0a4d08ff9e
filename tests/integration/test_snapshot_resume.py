"""Real gloo ranks: a crash between DCP checkpoints resumes from the newest in-memory snapshot."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.dist import final_losses, metrics, run_ranks, tiny_cfg
from trainer.checkpoint import committed_checkpoints

pytestmark = pytest.mark.timeout(600)
LOSS_TOL = 1e-4
"""As for a resume from a checkpoint: the same layout resumes bit-for-bit in practice."""


STEPS = 12


def _cfg(snap: Path, **kw: object) -> dict[str, object]:
    return tiny_cfg(steps=STEPS, interval=8, async_save=False, snapshot_interval_steps=3, snapshot_dir=str(snap),
                    **kw)


def test_crash_resumes_from_snapshot_then_falls_back_on_a_bad_one(tmp_path: Path) -> None:
    ref = tmp_path / "ref"
    r = run_ranks(tiny_cfg(steps=STEPS, interval=8, async_save=False), ref)
    assert r.returncodes == [0, 0], Path(r.logs[0]).read_text()[-3000:]
    reference = final_losses(metrics(ref))

    run, snap = tmp_path / "run", tmp_path / "shm"
    r = run_ranks(_cfg(snap), run, control={i: {"exit_at_step": 8, "exit_code": 3} for i in range(2)})
    assert r.returncodes == [3, 3]
    assert committed_checkpoints(run / "ckpt") == []
    for rank in range(2):  # the newest two of steps 3 and 6
        assert sorted(p.name for p in (snap / f"rank-{rank:05d}").glob("*.json")) == \
            ["step-00000003.json", "step-00000006.json"]
    r = run_ranks(_cfg(snap), run, attempt=2)
    assert r.returncodes == [0, 0], Path(r.logs[0]).read_text()[-3000:]
    rows = metrics(run)
    second = [x for x in rows if x["attempt"] == 2]
    assert second[0]["step"] == 7, "must resume from the snapshot of step 6"
    resumed = json.loads((run / "beacon-1.json").read_text())["resumed"]
    assert (resumed["kind"], resumed["step"]) == ("snapshot", 6)
    got = final_losses(rows)
    for step in range(1, STEPS + 1):
        assert abs(got[step] - reference[step]) <= LOSS_TOL, (step, got[step], reference[step])
    assert not (snap / "rank-00000").exists(), "a finished job gives its snapshots back"

    # A corrupt snapshot on one rank: every rank falls back to the committed checkpoint (step 8). The crash comes
    # two steps after the snapshot of step 9, as the first one's came after step 6's: the background writes are in.
    run2, snap2 = tmp_path / "run2", tmp_path / "shm2"
    r = run_ranks(_cfg(snap2), run2, control={i: {"exit_at_step": 12, "exit_code": 3} for i in range(2)})
    assert r.returncodes == [3, 3]
    assert [c.step for c in committed_checkpoints(run2 / "ckpt")] == [8]
    for rank in range(2):
        assert (snap2 / f"rank-{rank:05d}" / "step-00000009.json").exists(), f"rank {rank} lost its snapshot of 9"
    data = snap2 / "rank-00001" / "step-00000009.pt"
    raw = bytearray(data.read_bytes())
    raw[len(raw) // 2] ^= 0xFF
    data.write_bytes(bytes(raw))
    r = run_ranks(_cfg(snap2), run2, attempt=2)
    assert r.returncodes == [0, 0], Path(r.logs[0]).read_text()[-3000:]
    second = [x for x in metrics(run2) if x["attempt"] == 2]
    assert second[0]["step"] == 9, "must fall back to the checkpoint of step 8"
    assert "does not load on rank 1" in Path(r.logs[0]).read_text()
    got = final_losses(metrics(run2))
    for step in range(9, STEPS + 1):
        assert abs(got[step] - reference[step]) <= LOSS_TOL, (step, got[step], reference[step])
