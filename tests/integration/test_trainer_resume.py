"""Real gloo ranks: resume from the newest committed checkpoint, reshard, skip broken saves."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from tests.dist import final_losses, metrics, run_ranks, tiny_cfg
from trainer.checkpoint import COMMIT_MARKER, committed_checkpoints, quarantined_checkpoints

pytestmark = pytest.mark.timeout(600)
LOSS_TOL = 1e-4
"""Same layout resumes bit-for-bit in practice; a different dp changes reduction order (~1e-6)."""


@pytest.fixture(scope="module")
def reference(tmp_path_factory: pytest.TempPathFactory) -> dict[int, float]:
    run = tmp_path_factory.mktemp("ref")
    r = run_ranks(tiny_cfg(steps=10), run)
    assert r.returncodes == [0, 0], Path(r.logs[0]).read_text()[-3000:]
    return final_losses(metrics(run))


def test_crash_then_resume_matches_uninterrupted(tmp_path: Path, reference: dict[int, float]) -> None:
    cfg = tiny_cfg(steps=10)
    r = run_ranks(cfg, tmp_path, control={0: {"exit_at_step": 7, "exit_code": 3},
                                          1: {"exit_at_step": 7, "exit_code": 3}})
    assert r.returncodes == [3, 3]
    committed = committed_checkpoints(tmp_path / "ckpt")
    # The async save of step 4 commits in the background; it may or may not have
    # landed before the crash, and either way the newest commit is what resumes.
    resume = committed[-1].step if committed else 0
    assert resume in (0, 4)
    r = run_ranks(cfg, tmp_path, attempt=2)
    assert r.returncodes == [0, 0]
    rows = metrics(tmp_path)
    second = [x for x in rows if x["attempt"] == 2]
    assert second[0]["step"] == resume + 1, "metrics must continue from the committed checkpoint"
    assert [x["step"] for x in rows if x["attempt"] == 1] == list(range(1, 7))
    got = final_losses(rows)
    assert sorted(got) == list(range(1, 11))
    for step, loss in reference.items():
        assert abs(got[step] - loss) <= LOSS_TOL, (step, got[step], loss)


@pytest.mark.parametrize("new_dp", [1])
def test_resume_under_a_different_dp(tmp_path: Path, reference: dict[int, float], new_dp: int) -> None:
    r = run_ranks(tiny_cfg(steps=10, async_save=False), tmp_path,
                  control={i: {"exit_at_step": 5} for i in range(2)})
    assert committed_checkpoints(tmp_path / "ckpt")[-1].step == 4
    r = run_ranks(tiny_cfg(steps=10, dp=new_dp, gbs=8), tmp_path, attempt=2)
    assert r.returncodes == [0] * new_dp, Path(r.logs[0]).read_text()[-3000:]
    got = final_losses(metrics(tmp_path))
    for step in range(5, 11):
        assert abs(got[step] - reference[step]) <= LOSS_TOL, (step, got[step], reference[step])


def test_corrupt_newest_checkpoint_falls_back(tmp_path: Path, reference: dict[int, float]) -> None:
    r = run_ranks(tiny_cfg(steps=10, async_save=False), tmp_path,
                  control={i: {"exit_at_step": 10} for i in range(2)})
    ckpts = committed_checkpoints(tmp_path / "ckpt")
    assert [c.step for c in ckpts][-2:] == [4, 8]
    # A good copy of step 8 without its marker, named as a newer step: it would load (and resume at
    # step 9) if uncommitted folders were ever read.
    half = tmp_path / "ckpt" / "step-00000009"
    shutil.copytree(ckpts[-1].path, half)
    (half / COMMIT_MARKER).unlink()
    # Then corrupt the committed step 8's data: the resume must fall back to step 4.
    for f in ckpts[-1].path.glob("*.distcp"):
        f.write_bytes(b"garbage")
    r = run_ranks(tiny_cfg(steps=10), tmp_path, attempt=2)
    assert r.returncodes == [0, 0], Path(r.logs[0]).read_text()[-3000:]
    second = [x for x in metrics(tmp_path) if x["attempt"] == 2]
    assert second[0]["step"] == 5, "must fall back to step 4"
    got = final_losses(metrics(tmp_path))
    assert abs(got[10] - reference[10]) <= LOSS_TOL
    quarantined = quarantined_checkpoints(tmp_path / "ckpt")
    assert [q.name.split(".")[0] for q in quarantined] == ["step-00000008"]
    assert all(f.read_bytes() == b"garbage" for f in quarantined[0].glob("*.distcp")), "kept as found"
    assert half.is_dir() and not (half / COMMIT_MARKER).exists(), "an uncommitted folder is never touched"

