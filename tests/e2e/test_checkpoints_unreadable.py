"""`submit`: a longer schedule continues a succeeded job; unreadable checkpoints never restart it.

The three submissions go to one Ray cluster (`--address`); the embedded path: tests/e2e/test_submit_embedded.py.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.cli import metrics_rows, orch, orch_json
from tests.conftest import small_job, write_job
from tests.raycluster import ray_cluster, ray_env
from trainer.checkpoint import committed_checkpoints, quarantined_checkpoints

pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]


def _job(tmp_path: Path, shared: Path, steps: int) -> Path:
    job = small_job("nolost", steps=steps, interval=4, checkpoint={"async": False, "folder": str(shared)},
                    # room for a slow start on a loaded 2-core machine; nothing in this job hangs
                    reliability={"hang_timeout_s": 120, "max_restarts": 1})
    return write_job(tmp_path / f"job-{steps}.yaml", job)


def _flip_bytes(d: Path) -> None:
    for shard in d.glob("*.distcp"):
        data = bytearray(shard.read_bytes())
        data[len(data) // 2] ^= 0xFF
        shard.write_bytes(bytes(data))


def test_more_steps_continue_and_unreadable_checkpoints_fail_without_redoing_a_step(
        tmp_path: Path, state_dir: Path) -> None:
    cli_env = ray_env()
    cli_env["ORCHESTRATOR_HOME"] = str(state_dir)
    with ray_cluster([("node-a", 4)]) as address:
        _continue_then_fail(tmp_path, cli_env, state_dir, address)


def _continue_then_fail(tmp_path: Path, cli_env: dict[str, str], state_dir: Path, address: str) -> None:
    shared = tmp_path / "shared"
    # Another job's checkpoint in the same checkpoint.folder: never read, pruned or deleted by this job.
    other = shared / "other" / "step-00000004"
    other.mkdir(parents=True)
    (other / "COMMITTED").write_text(json.dumps({"step": 4}))
    ckdir = shared / "nolost"
    run_dir = state_dir / "runs" / "nolost"

    r = orch(["submit", str(_job(tmp_path, shared, 8)), "--address", address], cli_env, timeout_s=600)
    assert r.returncode == 0, r.stdout + r.stderr
    assert [c.step for c in committed_checkpoints(ckdir)] == [4, 8]

    # A longer schedule continues from the newest commit instead of asking for --fresh.
    r = orch(["submit", str(_job(tmp_path, shared, 12)), "--address", address], cli_env, timeout_s=600)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "continuing to step 12" in r.stdout
    rows = metrics_rows(run_dir)
    assert [x["step"] for x in rows[8:]] == [9, 10, 11, 12] and rows[8]["attempt"] > rows[7]["attempt"]
    assert [c.step for c in committed_checkpoints(ckdir)] == [4, 8, 12]

    # Every committed checkpoint corrupt: each attempt fails at load with the reason, nothing is retrained.
    for c in committed_checkpoints(ckdir):
        _flip_bytes(c.path)
    r = orch(["submit", str(_job(tmp_path, shared, 16)), "--address", address], cli_env, timeout_s=600)
    assert r.returncode == 1, r.stdout + r.stderr
    st = orch_json(["status", "nolost"], cli_env)
    assert st["state"] == "failed"
    assert "checkpoint load failed" in st["reason"] and "not starting over from step 0" in st["reason"], st["reason"]
    assert metrics_rows(run_dir) == rows, "no step may be trained again"
    assert committed_checkpoints(ckdir) == []
    assert [p for p in ckdir.iterdir() if p.name.startswith(("step-", ".tmp")) and ".quarantined-" not in p.name] == []
    assert sorted(q.name.split(".")[0] for q in quarantined_checkpoints(ckdir)) == [
        "step-00000004", "step-00000008", "step-00000012"]
    # max_restarts=1: two attempts, the first quarantines all three, the second finds only quarantined ones.
    first, second = sorted((run_dir / "logs").glob("attempt-*"))[-2:]
    log = (first / "rank-00000.log").read_text()
    assert "checkpoint load failed" in log and "checksum mismatch" in log and "Traceback" not in log
    assert "only quarantined ones" in (second / "rank-00000.log").read_text()
    incidents = [i for i in orch_json(["incidents", "list"], cli_env)
                 if i["job"] == "nolost" and "checkpoint load failed" in (i["explanation"] or "")]
    assert len(incidents) == 2 and all(i["kind"] == "crash" for i in incidents), incidents
    assert (other / "COMMITTED").is_file()
