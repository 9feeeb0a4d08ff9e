"""A rank SIGKILLed between two DCP checkpoints: the job resumes from the newest in-memory snapshot.

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
from tests.cli import metrics_rows, orch_json, start_submit, wait_for
from tests.conftest import small_job, write_job
from trainer.local_run import read_metrics, run_local

pytestmark = [pytest.mark.slow, pytest.mark.timeout(600)]
LOSS_TOL = 1e-4
"""As in the checkpoint resume tests: the same layout resumes bit-for-bit in practice."""
STEPS = 60
NAME = "snap-kill"


def slow_down(run_dir: Path, ranks: int, delay_s: float = 0.1) -> None:
    """Every rank of the running attempt sleeps before each step (the same for all: no straggler), so that the
    fault lands between the snapshot at step 20 and the checkpoint at step 50 on a fast or a loaded machine."""
    for r in range(ranks):
        (run_dir / "control" / f"rank-{r:05d}.json").write_text(json.dumps({"step_delay_s": delay_s}))


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

    reference = _reference(run_dir, tmp_path / "ref")
    got = {x["step"]: x["loss"] for x in rows}
    assert sorted(got) == sorted(reference) == list(range(1, STEPS + 1))
    worst = max(abs(got[k] - reference[k]) for k in reference)
    assert worst <= LOSS_TOL, f"loss differs from the uninterrupted run by {worst}"


def _reference(run_dir: Path, out: Path) -> dict[int, float]:
    """Losses of the attempt's trainer configuration run uninterrupted, without snapshots (gloo ranks, no Ray)."""
    cfg = json.loads((run_dir / "attempts" / "attempt-001" / "trainer.json").read_text())
    cfg.update(snapshot_interval_steps=0, snapshot_dir=None)
    ref = run_local(cfg, out)
    assert not any(ref.returncodes), Path(ref.logs[0]).read_text()[-2000:]
    return {x["step"]: x["loss"] for x in read_metrics(out)}


def test_lost_host_resumes_from_the_peer_copy(tmp_path: Path, state_dir: Path) -> None:
    """Three Ray nodes on this machine (each with its own part of the snapshot folder), a 4-rank job on two of
    them and a spare. The raylet of the gang's second host is SIGKILLed after step 20: its two ranks restart
    on the spare, whose memory held nothing of theirs; they can resume from a snapshot only through the copies
    the first host kept of them."""
    from tests.e2e.test_multinode import _raylet_pid
    from tests.raycluster import ray_cluster, ray_env

    env = ray_env()
    env["ORCHESTRATOR_HOME"] = str(state_dir)
    name = "snap-host"
    job = write_job(tmp_path / "job.yaml", small_job(
        name, dp=4, steps=STEPS, checkpoint={"interval_steps": 50, "snapshot_interval_steps": 5, "async": False},
        reliability={"hang_timeout_s": 60, "max_restarts": 3, "spares": 1, "preflight_collective": False}))
    run_dir = state_dir / "runs" / name
    snap_dir: str | None = None
    with ray_cluster([("node-a", 2), ("node-b", 2), ("node-c", 2)]) as address:
        proc = start_submit(job, env, "--address", address, log=tmp_path / "submit.log")
        try:
            wait_for(lambda: metrics_rows(run_dir), 300, "the first step")
            snap_dir = json.loads((run_dir / "attempts" / "attempt-001" / "trainer.json").read_text())["snapshot_dir"]
            slow_down(run_dir, ranks=4)
            wait_for(lambda: any(x["step"] >= 21 for x in metrics_rows(run_dir)), 240, "step 21")
            st = orch_json(["status", name], env)
            hosts = {r["rank"]: r["host"] for r in st["ranks"]}
            lost = sorted(set(hosts.values()) - {"node-a"})[0]  # the head node carries the controller
            os.kill(_raylet_pid(lost), signal.SIGKILL)
            assert proc.wait(timeout=400) == 0, (tmp_path / "submit.log").read_text()[-3000:]
        finally:
            if proc.poll() is None:
                proc.kill()
            if snap_dir:
                shutil.rmtree(snap_dir, ignore_errors=True)
    cat = Catalog(f"sqlite:///{state_dir / 'catalog.db'}")
    [i] = [i for i in cat.interruptions(name) if i.kind != "straggler"]
    assert i.kind == "node_lost" and i.hosts == [lost]
    second = cat.get_attempt(name, i.attempt + 1)
    assert second is not None
    moved = sorted(r for r, h in hosts.items() if h == lost)
    new_hosts = {r.rank: r.host for r in second.ranks}
    assert moved and all(new_hosts[r] != lost for r in moved), (hosts, new_hosts)
    resumed = second.layout["resumed_from"]
    assert resumed["kind"] == "snapshot", resumed
    s = resumed["step"]
    assert s >= 15 and s % 5 == 0 and not [c for c in cat.checkpoints(name) if c.step <= s]
    for r in moved:  # loaded from its new host's memory, where only the copy kept by a peer could have come from
        log = (run_dir / "logs" / f"attempt-{i.attempt + 1:03d}" / f"rank-{r:05d}.log").read_text()
        assert f"resumed from snapshot {snap_dir}/host-{new_hosts[r]}/rank-{r:05d}/step-{s:08d}.pt" in log, log[-2000:]
    rows = metrics_rows(run_dir)
    assert [x for x in rows if x["attempt"] == i.attempt + 1][0]["step"] == s + 1
    reference = _reference(run_dir, tmp_path / "ref")
    got = {x["step"]: x["loss"] for x in rows}
    assert sorted(got) == sorted(reference) == list(range(1, STEPS + 1))
    worst = max(abs(got[k] - reference[k]) for k in reference)
    assert worst <= LOSS_TOL, f"loss differs from the uninterrupted run by {worst}"
