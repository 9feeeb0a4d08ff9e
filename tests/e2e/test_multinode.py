"""Jobs on a real multi-node Ray cluster reached with --address: capacity around cordoned hosts, lost nodes."""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path
from typing import Any

import pytest

from tests.cli import orch, wait_for
from tests.conftest import small_job, write_job
from tests.e2e.test_snapshot_recovery import _reference
from tests.raycluster import ray_cluster, ray_env

pytestmark = [pytest.mark.slow, pytest.mark.timeout(600)]


def _refused_around_a_cordoned_host(tmp_path: Path, env: dict[str, str], cat: Any, address: str) -> None:
    """Three TP groups of 2 (a group never spans hosts) need all three 2-slot hosts: with one cordoned they do
    not fit, and `submit --address` says so before anything starts. Then the host is put back in service."""
    cat.set_host_state("node-b", "cordoned", reason="test", actor="test", create=True)
    job = write_job(tmp_path / "toobig.yaml", small_job("toobig", dp=3, tp=2, steps=6, interval=3))
    t0 = time.time()
    r = orch(["submit", str(job), "--address", address], env, timeout_s=300)
    assert r.returncode != 0 and "cordoned" in (r.stdout + r.stderr)
    assert "tensor-parallel groups of 2" in (r.stdout + r.stderr)
    assert time.time() - t0 < 60, "the refusal must come before anything is placed"
    cat.set_host_state("node-b", "repaired", reason="test over", actor="test")


def _raylet_pid(host_label: str) -> int:
    for p in Path("/proc").iterdir():
        if not p.name.isdigit():
            continue
        try:
            cmd = (p / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if "/raylet/raylet" in cmd.split(" ")[0] and f'"host": "{host_label}"' in cmd:
            return int(p.name)
    raise AssertionError(f"no raylet for host {host_label}")


def test_lost_nodes_are_replaced_by_a_spare_then_dp_shrinks(tmp_path: Path, state_dir: Path) -> None:
    """Three hosts, a four-rank job on two of them and one spare held aside (after a job that does not fit
    around a cordoned host was refused up front).

    The first lost node is replaced by the spare (dp stays 4), and its ranks resume from the in-memory
    snapshot newer than the last checkpoint: the spare's memory held nothing of theirs, so only the copies
    a peer host kept of them can have filled it. The second, with no spare left, shrinks dp to what the
    head node holds (another layout: from the checkpoint).
    """
    import os
    import signal

    from orchestrator.catalog.repository import Catalog
    from tests.cli import metrics_rows, slow_down, start_submit

    env = ray_env()
    env["ORCHESTRATOR_HOME"] = str(state_dir)
    job = write_job(tmp_path / "job.yaml", small_job(
        "spare", dp=4, steps=80, checkpoint={"interval_steps": 40, "snapshot_interval_steps": 5, "async": False},
        reliability={"allow_shrink_dp": True, "max_restarts": 4, "spares": 1}))
    run_dir = state_dir / "runs" / "spare"
    snap_dir: str | None = None
    with ray_cluster([("node-a", 2), ("node-b", 2), ("node-c", 2)]) as address:
        cat = Catalog(f"sqlite:///{state_dir / 'catalog.db'}")
        _refused_around_a_cordoned_host(tmp_path, env, cat, address)
        proc = start_submit(job, env, "--address", address, log=tmp_path / "submit.log")
        try:
            def spare_held() -> dict | None:
                r = orch(["status", "spare", "--json"], env)
                st = json.loads(r.stdout) if r.returncode == 0 else {}
                return st if st.get("spares") and st["step"] >= 1 else None

            st = wait_for(spare_held, 300, "a spare held and step 1", interval_s=1.0)
            snap_dir = json.loads((run_dir / "attempts" / "attempt-001" / "trainer.json").read_text())["snapshot_dir"]
            placed = {r["rank"]: r["host"] for r in st["ranks"]}
            # Every rank alike sleeps before each step, so that the fault lands after the snapshot at step 10 (and
            # its copy) and its detection (Ray's node-death timeout; the trainers of a node whose raylet died go
            # on until then) comes before the checkpoint at step 40, on a fast or a loaded machine.
            slow_down(run_dir, ranks=4, delay_s=0.4)
            wait_for(lambda: any(x["step"] >= 12 for x in metrics_rows(run_dir)), 240, "step 12")
            gang = set(placed.values())
            [spare] = st["spares"]
            assert len(gang) == 2 and spare not in gang, st
            first = sorted(gang - {"node-a"})[0]  # the head node carries the controller and the cluster
            os.kill(_raylet_pid(first), signal.SIGKILL)
            wait_for(lambda: any(i.resumed_at for i in cat.interruptions("spare")), 300, "the first resume")
            second_attempt = cat.require_job("spare").attempts[-1]
            assert second_attempt.layout["dp"] == 4 and second_attempt.layout["swapped_in"] == [spare]
            hosts = {r.host for r in second_attempt.ranks}
            assert hosts == (gang - {first}) | {spare}
            wait_for(lambda: any(x["attempt"] == second_attempt.number and x["step"] >= 42
                                 for x in metrics_rows(run_dir)), 240, "the second attempt past the checkpoint")
            second = sorted(hosts - {"node-a"})[0]
            os.kill(_raylet_pid(second), signal.SIGKILL)
            assert proc.wait(timeout=400) == 0, (tmp_path / "submit.log").read_text()[-3000:]
        finally:
            if proc.poll() is None:
                proc.kill()
            if snap_dir:
                shutil.rmtree(snap_dir, ignore_errors=True)
        lost = cat.interruptions("spare")
        assert [(i.kind, i.hosts) for i in lost] == [("node_lost", [first]), ("node_lost", [second])]
        assert {first, second} <= cat.cordoned_hosts()
        job_row = cat.require_job("spare")
        assert job_row.state == "succeeded" and job_row.last_step == 80

        # The first resume: from the snapshot, through the peer's copy, with the losses of an uninterrupted run.
        i = lost[0]
        resumed = job_row.attempts[1].layout["resumed_from"]
        assert resumed["kind"] == "snapshot", resumed
        s = resumed["step"]
        older = [c.step for c in cat.checkpoints("spare") if c.step <= s]
        assert s >= 10 and s % 5 == 0 and s > max(older, default=0), (s, older)
        new_hosts = {r.rank: r.host for r in job_row.attempts[1].ranks}
        moved = sorted(r for r, h in placed.items() if h == first)
        assert moved and all(new_hosts[r] != first for r in moved), (placed, new_hosts)
        for r in moved:  # loaded from its new host's memory, where only a peer's copy could have come from
            log = (run_dir / "logs" / f"attempt-{i.attempt + 1:03d}" / f"rank-{r:05d}.log").read_text()
            assert f"resumed from snapshot {snap_dir}/host-{new_hosts[r]}/rank-{r:05d}/step-{s:08d}.pt" in log, \
                log[-2000:]
        rows = metrics_rows(run_dir)
        assert [x for x in rows if x["attempt"] == i.attempt + 1][0]["step"] == s + 1
        got = {x["step"]: x["loss"] for x in rows if x["attempt"] <= i.attempt + 1}
        reference = _reference(run_dir, tmp_path / "ref", until=max(got))
        worst = max(abs(got[k] - reference[k]) for k in got)
        assert worst <= 1e-4, f"loss differs from the uninterrupted run by {worst}"

        last = job_row.attempts[-1]
        assert last.layout["dp"] == 2 and last.layout["shrunk_from"] == 4
        assert {r.host for r in last.ranks} == {"node-a"}
