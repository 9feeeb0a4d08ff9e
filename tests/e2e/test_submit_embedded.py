"""`orchestrator submit` on the embedded Ray: run, Ctrl-C, resubmit, resume."""

from __future__ import annotations

from pathlib import Path

import pytest

from orchestrator.catalog.repository import Catalog
from orchestrator.controller.trainer_config import trainer_config
from orchestrator.spec import load_job_file
from tests.cli import interrupt, metrics_rows, orch, orch_json, slow_down, start_submit, wait_for
from tests.conftest import small_job, write_job
from trainer.local_run import read_metrics, run_local

pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]
LOSS_TOL = 1e-4


def _losses(rows: list[dict]) -> dict[int, float]:
    return {r["step"]: r["loss"] for r in rows}


def test_stop_and_resubmit_resumes_from_last_checkpoint(tmp_path: Path, cli_env: dict[str, str],
                                                          state_dir: Path) -> None:
    job = write_job(tmp_path / "job.yaml", small_job("resume", steps=24, interval=5,
                                                       checkpoint={"async": False}))
    # Reference: the same job's trainer config, uninterrupted, as local processes (the submissions below
    # are the embedded-Ray path under test; a third one would only repeat the first's start-up).
    ref = run_local(trainer_config(load_job_file(job)), tmp_path / "ref", timeout_s=300)
    assert ref.returncodes == [0, 0], ref.logs
    reference = _losses(read_metrics(tmp_path / "ref"))
    assert sorted(reference) == list(range(1, 25))

    run_dir = state_dir / "runs" / "resume"
    proc = start_submit(job, cli_env, log=tmp_path / "submit1.log")
    wait_for(lambda: metrics_rows(run_dir), 300, "the first step")
    # 0.6 s before each step from here: the stop lands well before step 24 on a fast machine too (the
    # resubmission's attempt starts with no delay).
    slow_down(run_dir, ranks=2, delay_s=0.6)
    wait_for(lambda: any(x["step"] >= 12 for x in metrics_rows(run_dir)), 300, "step 12")
    interrupt(proc)
    assert proc.wait(timeout=180) == 130, (tmp_path / "submit1.log").read_text()
    st = orch_json(["status", "resume"], cli_env)
    assert st["state"] == "stopped"
    cat = Catalog(f"sqlite:///{state_dir / 'catalog.db'}")
    planned = [i for i in cat.interruptions("resume") if i.planned]
    assert len(planned) == 1 and planned[0].kind == "operator_stop"
    rows = metrics_rows(run_dir)
    stopped_at = max(x["step"] for x in rows)
    committed = max(c.step for c in cat.checkpoints("resume"))
    assert committed >= 10 and committed % 5 == 0

    r = orch(["submit", str(job)], cli_env, timeout_s=600)
    assert r.returncode == 0, r.stdout + r.stderr
    rows = metrics_rows(run_dir)
    second = [x for x in rows if x["attempt"] == 2]
    assert second[0]["step"] == committed + 1, "metrics.jsonl must continue from the committed checkpoint"
    assert stopped_at >= committed
    got = _losses(rows)
    assert sorted(got) == list(range(1, 25))
    worst = max(abs(got[s] - reference[s]) for s in reference)
    assert worst <= LOSS_TOL, f"loss differs from the uninterrupted run by {worst}"

    st = orch_json(["status", "resume"], cli_env)
    assert st["state"] == "succeeded" and st["attempt"] == 2 and st["step"] == 24
    assert [r["state"] for r in st["ranks"]] == ["exited", "exited"]
    assert all(r["pid"] and r["host"] for r in st["ranks"])
    jobs = orch_json(["jobs"], cli_env)
    assert [j["job"] for j in jobs] == ["resume"]
    # Everything lands where the README says.
    for rel in ("catalog.db", "runs/resume/metrics.jsonl", "runs/resume/logs/attempt-001/rank-00000.log",
                "runs/resume/logs/attempt-002/rank-00001.log", "runs/resume/attempts/attempt-002/trainer.json",
                "runs/resume/beacons/rank-00001.json"):
        assert (state_dir / rel).is_file(), rel
    assert any((state_dir / "runs/resume/checkpoints").glob("step-*/COMMITTED"))
    # Submitting a finished job again does nothing unless asked.
    r = orch(["submit", str(job)], cli_env)
    assert r.returncode == 0 and "already succeeded" in r.stdout
