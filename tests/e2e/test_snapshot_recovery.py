"""A rank SIGKILLed between two DCP checkpoints: the job resumes from the newest in-memory snapshot.

(A lost host's ranks resuming from a peer's copy: tests/e2e/test_multinode.py, in the spare-swap job.)

One job on the embedded Ray (2 ranks, checkpoints every 50 steps, snapshots every 5). Rank 1 is
killed after step 20, long before the first checkpoint; the next attempt must start after the
newest snapshot every rank holds (not from step 0), say so in the catalog (the attempt's
`resumed_from`, the interruption's resume step and steps lost), and train on with the losses of
an uninterrupted run of the same configuration.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
from pathlib import Path

import pytest

from orchestrator.catalog.repository import Catalog
from tests.cli import metrics_rows, orch_json, slow_down, start_submit, wait_for
from tests.conftest import small_job, write_job
from trainer.local_run import read_metrics, run_local, world_size_of

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
        wait_for(lambda: metrics_rows(run_dir), 240, "the first step")
        snap_dir = json.loads((run_dir / "attempts" / "attempt-001" / "trainer.json").read_text())["snapshot_dir"]
        slow_down(run_dir, ranks=2)
        wait_for(lambda: any(x["step"] >= 21 for x in metrics_rows(run_dir)), 240, "step 21")
        os.kill(json.loads((run_dir / "beacons" / "rank-00001.json").read_text())["pid"], signal.SIGKILL)
        assert proc.wait(timeout=400) == 0, (tmp_path / "submit.log").read_text()[-3000:]
        left = sorted(str(p) for p in Path(snap_dir).rglob("*"))
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
    assert left == [] and not Path(snap_dir).exists(), f"a finished job gives its snapshots back: {left[:5]}"

    reference = _reference(run_dir, tmp_path / "ref")
    got = {x["step"]: x["loss"] for x in rows}
    assert sorted(got) == sorted(reference) == list(range(1, STEPS + 1))
    worst = max(abs(got[k] - reference[k]) for k in reference)
    assert worst <= LOSS_TOL, f"loss differs from the uninterrupted run by {worst}"


def _reference(run_dir: Path, out: Path, until: int | None = None) -> dict[int, float]:
    """Losses of the attempt's trainer configuration run uninterrupted, without snapshots (gloo ranks, no Ray).

    With `until`, every rank leaves (code 0) before the step after it: the steps compared are the same as in
    a whole run (the learning-rate schedule still spans the configured steps), the rest is not run."""
    cfg = json.loads((run_dir / "attempts" / "attempt-001" / "trainer.json").read_text())
    cfg.update(snapshot_interval_steps=0, snapshot_dir=None)
    control = None
    if until is not None:
        control = {r: {"exit_at_step": until + 1, "exit_code": 0} for r in range(world_size_of(cfg))}
    ref = run_local(cfg, out, control=control)
    assert not any(ref.returncodes), Path(ref.logs[0]).read_text()[-2000:]
    got = {x["step"]: x["loss"] for x in read_metrics(out)}
    assert until is None or max(got) == until, (until, max(got))
    return got
