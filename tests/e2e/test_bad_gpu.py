"""An Xid 79 injected through a host's (fake) NVML on a real three-node Ray cluster.

The node agent's GPU probe reports it, the controller stops the attempt,
classifies it faulty_gpu from the probe's evidence, cordons the host, swaps in
the spare (after a preflight of the new gang) and the job finishes every step.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from orchestrator.catalog.repository import Catalog
from tests.cli import orch, start_submit, wait_for
from tests.conftest import small_job, write_job
from tests.raycluster import ray_cluster, ray_env

pytestmark = [pytest.mark.slow, pytest.mark.timeout(600)]


def test_injected_xid_79_is_classified_cordoned_and_replaced_by_a_spare(
        tmp_path: Path, state_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ORCHESTRATOR_FAKE_NVML", "1")  # every node of the cluster reads a fake NVML
    monkeypatch.setenv("ORCHESTRATOR_PROBE_INTERVAL_S", "1")
    env = ray_env()
    env["ORCHESTRATOR_HOME"] = str(state_dir)
    job = write_job(tmp_path / "job.yaml", small_job(
        "xid", dp=4, steps=80, interval=5, reliability={"max_restarts": 3, "spares": 1, "hang_timeout_s": 120}))
    with ray_cluster([("node-a", 2), ("node-b", 2), ("node-c", 2)]) as address:
        proc = start_submit(job, env, "--address", address, log=tmp_path / "submit.log")
        cat = Catalog(f"sqlite:///{state_dir / 'catalog.db'}")
        try:
            def running() -> dict | None:
                r = orch(["status", "xid", "--json"], env)
                st = json.loads(r.stdout) if r.returncode == 0 else {}
                return st if st.get("spares") and st.get("step", 0) >= 3 else None

            st = wait_for(running, 300, "step 3 with a spare held", interval_s=1.0)
            host3 = next(r["host"] for r in st["ranks"] if r["rank"] == 3)
            [spare] = st["spares"]
            r = orch(["chaos", "xid", "xid", "--rank", "3", "--code", "79"], env)
            assert r.returncode == 0, r.stderr
            assert proc.wait(timeout=400) == 0, (tmp_path / "submit.log").read_text()[-3000:]
        finally:
            if proc.poll() is None:
                proc.kill()
        # A loaded 2-core machine may add a hang or two later on; the Xid is the first interruption.
        i = [i for i in cat.interruptions("xid") if i.kind != "straggler"][0]
        assert (i.kind, i.category, i.hosts) == ("bad_gpu", "faulty_gpu", [host3])
        assert i.step_at_fault < 80, "the Xid must interrupt training, not land after it"
        [probe] = [p for p in i.evidence["probes"] if ": 79," in p["message"]]
        assert probe["host"] == host3 and probe["source"] == "nvml" and probe["gpu"] == 0
        assert f"host={host3} gpu=0 source=nvml severity=fail: NVRM: Xid" in i.evidence_text
        assert host3 in cat.cordoned_hosts()
        job_row = cat.require_job("xid")
        assert job_row.state == "succeeded" and job_row.last_step == 80
        first, second, last = job_row.attempts[0], job_row.attempts[1], job_row.attempts[-1]
        assert second.layout["swapped_in"] == [spare]
        assert host3 not in {r.host for a in job_row.attempts[1:] for r in a.ranks}
        assert all(a.layout.get("preflight_s", 0) > 0 for a in (first, last))
        report = json.loads(orch(["report", "xid", "--json"], env).stdout)
        assert report["per_job"][0]["time_lost_seconds"]["preflight"] > 0
