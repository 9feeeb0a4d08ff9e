"""Submit to a real two-node Ray cluster with --address and follow it with `status`."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from tests.cli import orch, orch_json, wait_for
from tests.conftest import small_job, write_job
from tests.raycluster import ray_cluster, ray_env

pytestmark = [pytest.mark.slow, pytest.mark.timeout(600)]


def test_ranks_spread_over_two_nodes(tmp_path: Path, state_dir: Path) -> None:
    env = ray_env()
    env["ORCHESTRATOR_HOME"] = str(state_dir)
    job = write_job(tmp_path / "job.yaml", small_job("spread", dp=4, steps=10, interval=5))
    with ray_cluster([("node-a", 2), ("node-b", 2)]) as address:
        t0 = time.time()
        r = orch(["submit", str(job), "--address", address, "--no-follow"], env, timeout_s=120)
        assert r.returncode == 0, r.stderr
        assert r.stdout.strip() == "spread"
        assert time.time() - t0 < 60, "--no-follow must return at once"
        seen_running = []

        def ended() -> bool:
            st = orch_json(["status", "spread"], env)
            if st["state"] == "running":
                seen_running.append(st)
            return st["state"] in ("succeeded", "failed", "stopped")

        wait_for(ended, 300, "the job to end", interval_s=1.0)
        st = orch_json(["status", "spread"], env)
        assert st["state"] == "succeeded", st
        assert st["step"] == 10
        assert {r["host"] for r in st["ranks"]} == {"node-a", "node-b"}
        assert len({r["pid"] for r in st["ranks"]}) == 4
        assert seen_running, "status never showed the job running"
