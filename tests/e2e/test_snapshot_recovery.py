"""A rank SIGKILLed between two DCP checkpoints: the job resumes from the newest in-memory snapshot.

One job on the embedded Ray (2 ranks, checkpoints every 50 steps, snapshots every 5). Rank 1 is
killed after step 20, long before the first checkpoint; the next attempt must start after the
newest snapshot every rank holds (not from step 0), say so in the catalog (the attempt's
`resumed_from`, the interruption's resume step and steps lost), and train on with the losses of
an uninterrupted run of the same configuration.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from orchestrator.catalog.repository import Catalog
from tests.cli import metrics_rows, orch, orch_json, start_submit, wait_for
from tests.conftest import small_job, write_job
from trainer.local_run import read_metrics, run_local

pytestmark = [pytest.mark.slow, pytest.mark.timeout(600)]
LOSS_TOL = 1e-4
"""As in the checkpoint resume tests: the same layout resumes bit-for-bit in practice."""
STEPS = 60
NAME = "snap-kill"


def test_sigkill_between_checkpoints_resumes_from_the_snapshot(tmp_path: Path, cli_env: dict[str, str],
                                                               state_dir: Path) -> None:
    job = write_job(tmp_path / "job.yaml", small_job(
        NAME, dp=2, steps=STEPS, checkpoint={"interval_steps": 50, "snapshot_interval_steps": 5, "async": False},
        reliability={"hang_timeout_s": 60, "max_restarts": 3, "preflight_collective": False}))
    run_dir = state_dir / "runs" / NAME
    proc = start_submit(job, cli_env, log=tmp_path / "submit.log")
    snap_dir: str | None = None
    try:
        wait_for(lambda: any(x["step"] >= 21 for x in metrics_rows(run_dir)), 240, "step 21")
        snap_dir = json.loads((run_dir / "attempts" / "attempt-001" / "trainer.json").read_text())["snapshot_dir"]
        r = orch(["chaos", "kill", NAME, "--rank", "1"], cli_env)
        assert r.returncode == 0, r.stderr
        assert proc.wait(timeout=400) == 0, (tmp_path / "submit.log").read_text()[-3000:]
    finally:
        if proc.poll() is None:
            proc.kill()
        if snap_dir:
            shutil.rmtree(snap_dir, ignore_errors=True)
    assert snap_dir and snap_dir.startswith("/dev/shm/")
    st = orch_json(["status", NAME], cli_env)
    assert st["state"] == "succeeded" and st["step"] == STEPS

    cat = Catalog(f"sqlite:///{state_dir / 'catalog.db'}")
    [i] = [i for i in cat.interruptions(NAME) if i.kind != "straggler"]
    assert i.kind == "crash" and i.ranks == [1]
    second = cat.get_attempt(NAME, i.attempt + 1)
    assert second is not None
    resumed = second.layout["resumed_from"]
    assert resumed["kind"] == "snapshot"
    s = resumed["step"]
    committed_before = [c.step for c in cat.checkpoints(NAME) if c.attempt == i.attempt]
    assert committed_before == [] and s >= 20 and s % 5 == 0, (s, committed_before)
    assert (i.resume_step, second.start_step) == (s, s)
    assert i.step_at_fault is not None and i.steps_lost == i.step_at_fault - s and 0 <= i.steps_lost < 10
    rows = metrics_rows(run_dir)
    after = [x for x in rows if x["attempt"] == i.attempt + 1]
    assert after[0]["step"] == s + 1, "the second attempt must start right after the snapshot"
    assert not list(Path(snap_dir).rglob("step-*")), "a finished job gives its snapshots back"

    # The same trainer configuration, uninterrupted and without snapshots (plain gloo ranks, no Ray).
    cfg = json.loads((run_dir / "attempts" / "attempt-001" / "trainer.json").read_text())
    cfg.update(snapshot_interval_steps=0, snapshot_dir=None)
    ref = run_local(cfg, tmp_path / "ref")
    assert ref.returncodes == [0, 0], Path(ref.logs[0]).read_text()[-2000:]
    reference = {x["step"]: x["loss"] for x in read_metrics(tmp_path / "ref")}
    got = {x["step"]: x["loss"] for x in rows}
    assert sorted(got) == sorted(reference) == list(range(1, STEPS + 1))
    worst = max(abs(got[k] - reference[k]) for k in reference)
    assert worst <= LOSS_TOL, f"loss differs from the uninterrupted run by {worst}"
