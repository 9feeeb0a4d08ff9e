"""Bad GPUs and hosts, injected for real into one job on a six-node Ray cluster (one CPU, one rank slot each).

One job (dp=2, three spares, SDC check every 2 steps) goes through, in order:

1. preflight: node-b's (fake) NVML reports its GPU lost before the job starts; the preflight of the first
   gang (forced onto node-a and node-b: the other hosts are held cordoned until it is placed) takes
   node-b out before any trainer starts, and the job starts without it;
2. an Xid 79 on one rank's host -> faulty_gpu;
3. an Xid 48 (double-bit ECC) on another's -> gpu_hbm3_memory;
4. a perturbed SDC check on a third -> silent_data_corruption (the rank the check names exits 86);
5. a NaN batch -> rolled back to the last checkpoint in place, the batches since it skipped, no host blamed.

Each of 2-4 is detected, classified into its Table 5 category, its host cordoned, and the job resumes on a
spare: with three spares and no idle host, every restart's gang must take a spare's place. The job finishes
every step. Which host holds which rank is read from the catalog, never assumed.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy.exc import OperationalError

from orchestrator.catalog.repository import TERMINAL_JOB_STATES, Catalog
from tests.cli import orch, slow_down, start_submit, wait_for
from tests.conftest import small_job, write_job
from tests.raycluster import node_ids, ray_cluster, ray_env

pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]

JOB = "badgpu"
STEPS = 160
HOSTS = [f"node-{c}" for c in "abcdef"]
BAD_AT_START = "node-b"
HELD = HOSTS[2:]
"""Cordoned by the operator until the first gang is placed, so that it must take node-a and node-b."""
SLOW_S = 0.15
"""Each attempt that is about to be hit sleeps this long before every step: an attempt resumed from a late
snapshot has ~100 steps of ~0.13 s left, and the `chaos` call (a Ray client) must land before they are done."""


@dataclass
class Injected:
    what: str
    attempt: int
    rank: int
    host: str
    spares: list[str]


def _lose_gpu(run_dir: Path, node_id: str) -> None:
    """The fake NVML of that host reports its GPU lost (NVML_ERROR_GPU_IS_LOST) from the first probe on."""
    d = run_dir / "fake-nvml" / node_id
    d.mkdir(parents=True)
    (d / "gpus.json").write_text(json.dumps([{"index": 0, "pci": "0000:18:00.0", "lost": True}]))


def _status(cat: Catalog) -> Any:
    try:
        return cat.job_status(JOB)
    except OperationalError:  # the controller holds the SQLite write lock for a moment
        return None


def _training(cat: Catalog, after: int, spares: int) -> Any:
    """A condition: an attempt newer than `after` has trained two steps and holds `spares` spares."""
    def cond() -> Any:
        st = _status(cat)
        if st is None:
            return None
        assert st.job.state not in TERMINAL_JOB_STATES, f"job {JOB} is {st.job.state} too early: {st.job.reason}"
        a = next((a for a in st.attempts if a.number == st.job.current_attempt), None)
        if a is None or a.number <= after or a.first_step_at is None or st.job.last_step < a.start_step + 2:
            return None
        if len((a.layout or {}).get("spares", [])) < spares or len(st.current_ranks) != 2:
            return None
        assert st.job.last_step < STEPS - 30, f"job {JOB} nearly finished before the next fault (attempt {a.number})"
        return a.number, {r.rank: r.host for r in st.current_ranks}, list(a.layout["spares"])
    return cond


def test_bad_gpus_and_hosts_are_classified_cordoned_and_replaced_by_spares(
        tmp_path: Path, state_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ORCHESTRATOR_FAKE_NVML", "1")  # every node of the cluster reads a fake NVML
    monkeypatch.setenv("ORCHESTRATOR_PROBE_INTERVAL_S", "1")
    env = ray_env()
    env["ORCHESTRATOR_HOME"] = str(state_dir)
    job = write_job(tmp_path / "job.yaml", small_job(
        JOB, dp=2, steps=STEPS, interval=5,
        reliability={"max_restarts": 10, "spares": 3, "hang_timeout_s": 120, "sdc_check_interval_steps": 2}))
    cat = Catalog(f"sqlite:///{state_dir / 'catalog.db'}")
    for h in HELD:
        cat.set_host_state(h, "cordoned", reason="held until the first gang is placed", actor="test", create=True)
    injected: list[Injected] = []
    run_dir = state_dir / "runs" / JOB
    with ray_cluster([(h, 1) for h in HOSTS]) as address:
        _lose_gpu(run_dir, node_ids(address)[BAD_AT_START])
        proc = start_submit(job, env, "--address", address, log=tmp_path / "submit.log")
        try:
            def first_gang_placed() -> bool:
                st = _status(cat)
                return st is not None and {r.host for r in st.current_ranks} == {"node-a", BAD_AT_START}

            wait_for(first_gang_placed, 300, "the first gang placed on node-a and node-b", interval_s=0.2)
            for h in HELD:
                cat.set_host_state(h, "repaired", reason="released for the job's later gangs", actor="test")
            last = 0
            for what, rank, spares in (("xid79", 1, 3), ("xid48", 0, 2), ("sdc", 1, 1)):
                last, hosts, held = wait_for(_training(cat, last, spares), 400, f"training before {what}",
                                             interval_s=0.5)
                slow_down(run_dir, ranks=2, delay_s=SLOW_S)
                args = (["xid", JOB, "--rank", str(rank), "--code", what[3:]] if what.startswith("xid")
                        else ["sdc", JOB, "--rank", str(rank)])
                r = orch(["chaos", *args], env)
                assert r.returncode == 0, r.stderr
                injected.append(Injected(what, last, rank, hosts[rank], held))
            last, _, _ = wait_for(_training(cat, last, 0), 400, "training before the NaN batch", interval_s=0.5)
            slow_down(run_dir, ranks=2, delay_s=SLOW_S)
            r = orch(["chaos", "nan", JOB], env)
            assert r.returncode == 0, r.stderr
            slow_down(run_dir, ranks=2, delay_s=0)  # the request is in: the rest of the job at full speed
            assert proc.wait(timeout=400) == 0, (tmp_path / "submit.log").read_text()[-3000:]
        finally:
            if proc.poll() is None:
                proc.kill()

    job_row = cat.require_job(JOB)
    assert job_row.state == "succeeded" and job_row.last_step == STEPS
    attempts = job_row.attempts
    ints = [i for i in cat.interruptions(JOB) if i.kind != "straggler"]

    def ran_on(after: int) -> set[str]:
        return {r.host for a in attempts if a.number > after for r in a.ranks}

    # 1. Preflight: node-b taken out before any trainer started; the job started without it.
    [pf] = [i for i in ints if i.kind == "preflight"]
    first = attempts[0]
    assert (pf.attempt, pf.hosts, pf.category) == (1, [BAD_AT_START], "faulty_gpu")
    assert "GPU is lost" in pf.evidence_text
    assert {r.host for r in first.ranks} == {"node-a", BAD_AT_START} and all(r.pid is None for r in first.ranks)
    assert first.layout["preflight_s"] > 0 and first.first_step_at is None
    assert BAD_AT_START not in ran_on(1)

    # 2-4. Each hardware fault: its category, its host cordoned, the next gang on a spare and never on it again.
    expected = {"xid79": ("bad_gpu", "faulty_gpu"), "xid48": ("bad_gpu", "gpu_hbm3_memory"),
                "sdc": ("crash", "silent_data_corruption")}
    for inj in injected:
        [i] = [i for i in ints if i.attempt == inj.attempt]
        assert (i.kind, i.category, i.hosts) == (*expected[inj.what], [inj.host]), (inj, i.explanation)
        if inj.what.startswith("xid"):
            [probe] = [p for p in i.evidence["probes"] if f": {inj.what[3:]}," in p["message"]]
            assert probe["host"] == inj.host and probe["source"] == "nvml" and probe["gpu"] == 0
            assert f"host={inj.host} gpu=0 source=nvml severity=fail: NVRM: Xid" in i.evidence_text
        else:
            assert i.ranks == [inj.rank] and "exited with code 86" in i.explanation
        assert i.step_at_fault < STEPS, "the fault must interrupt training, not land after it"
        nxt = next(a for a in attempts if a.number > inj.attempt)
        swapped = nxt.layout.get("swapped_in", [])
        assert swapped and set(swapped) <= set(inj.spares), (inj, nxt.layout)
        assert inj.host not in ran_on(inj.attempt)
    assert len({inj.host for inj in injected}) == 3
    assert cat.cordoned_hosts() == {BAD_AT_START, *(inj.host for inj in injected)}

    # 5. The NaN batch: rolled back in place and skipped, no host blamed, no restart.
    [rb] = [i for i in ints if i.kind == "loss_rollback"]
    roll = rb.evidence["rollback"]
    assert rb.attempt == last == attempts[-1].number and rb.hosts == []
    assert "not finite" in roll["reason"] and roll["skipped_batches"] == roll["at_step"] - roll["to_step"] >= 1

    assert all(a.layout.get("preflight_s", 0) > 0 for a in attempts if a.ranks)
    report = json.loads(orch(["report", JOB, "--json"], env).stdout)
    assert report["per_job"][0]["time_lost_seconds"]["preflight"] > 0
