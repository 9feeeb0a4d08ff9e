"""Hosts that share nothing but checkpoint storage: three network + mount namespaces, a Ray node in each.

One cluster serves every test of the module (starting it costs ~30 s); the
partition and raylet-kill test runs last because the hosts it breaks do not
come back. h3's wall clock is set three days ahead for the whole module (a
preloaded shim, `tests/skewclock.c`): no finding may come of that.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from orchestrator.catalog.repository import Catalog
from tests.cli import ORCH, wait_for
from tests.conftest import small_job, write_job
from tests.netns import NetnsCluster, available, netns_cluster, skewed_clock

pytestmark = [pytest.mark.slow, pytest.mark.timeout(900),
              pytest.mark.skipif(available() is not None, reason=f"namespace cluster: {available()}")]


SKEWED, SKEW_S = "h3", 3 * 86400
"""h3's wall clock runs three days ahead (its monotonic clock is true): no test may see a finding from that."""


@pytest.fixture(scope="module")
def cluster() -> Any:
    folder = Path(tempfile.mkdtemp(prefix="orch-skew-", dir="/var/tmp"))  # not /tmp: each host has its own
    try:
        skew = skewed_clock(folder, SKEW_S)
        if skew is None:
            pytest.skip("namespace cluster: needs a C compiler for the clock-skew shim (make system-deps)")
        with netns_cluster([("h1", 2), ("h2", 2), ("h3", 2)], host_env={SKEWED: skew}) as c:
            r = c.run(c.host(SKEWED), ["date", "+%s"], timeout_s=30)
            assert int(r.stdout) > time.time() + SKEW_S - 600, f"{SKEWED}'s clock is not skewed: {r.stdout}"
            yield c
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def _job(c: NetnsCluster, name: str, **kw: Any) -> Path:
    job = small_job(name, **kw)
    job["checkpoint"]["folder"] = str(c.checkpoints / name)
    path = c.state_dir.parent / f"{name}.yaml"
    return write_job(path, job)


def _status(c: NetnsCluster, job: str) -> dict[str, Any]:
    r = c.run(c.head, [ORCH, "status", job, "--json"], timeout_s=60)
    return json.loads(r.stdout) if r.returncode == 0 else {}


def _wait_end(c: NetnsCluster, job: str, timeout_s: float) -> dict[str, Any]:
    def ended() -> dict[str, Any] | None:
        st = _status(c, job)
        return st if st.get("state") in ("succeeded", "failed", "stopped") else None

    return wait_for(ended, timeout_s, f"job {job} to end", interval_s=2.0)


def _catalog(c: NetnsCluster) -> Catalog:
    return Catalog(f"sqlite:///{c.state_dir / 'catalog.db'}")


def _ts(d: datetime) -> float:
    """A catalog time as seconds (SQLite gives them back without their zone, which is UTC)."""
    return (d if d.tzinfo else d.replace(tzinfo=UTC)).timestamp()


def _files_on(c: NetnsCluster, host: str, folder: Path) -> list[str]:
    r = c.run(c.host(host), ["find", str(folder), "-type", "f"], timeout_s=30)
    return sorted(r.stdout.split())


def test_a_throttled_link_is_found_as_a_hang_with_its_host_named(cluster: NetnsCluster) -> None:
    """Four ranks (tp=2) on two hosts; then the link of the one that is not the head (or either, when the head
    holds none) crawls at 64 kbit/s. Every rank waits in the same collective, so the flight recorder cannot
    name the slow end; each host's agent times a small transfer to the controller's node and the outlier is
    named. The job may not restart (max_restarts 0): one finding, then it ends."""
    c = cluster
    job = _job(c, "slow", dp=2, tp=2, steps=400, interval=50,
               reliability={"max_restarts": 0, "hang_timeout_s": 90})
    r = c.run(c.head, [ORCH, "submit", str(job), "--address", c.address, "--no-follow"], timeout_s=120)
    assert r.returncode == 0, r.stderr
    st = wait_for(lambda: _at_step(c, "slow", 6), 300, "step 6", interval_s=2.0)
    victim = sorted({x["host"] for x in st["ranks"]} - {"h1"})[0]
    t0 = time.time()
    c.throttle(c.host(victim), "64kbit")
    try:
        st = _wait_end(c, "slow", 180)
    finally:
        c.throttle(c.host(victim), None)
    cat = _catalog(c)
    found = [i for i in cat.interruptions("slow") if i.kind != "straggler"]
    stragglers = [(i.hosts, i.explanation[:120]) for i in cat.interruptions("slow") if i.kind == "straggler"]
    print(f"slow link on {victim}: {[(i.kind, i.hosts, _ts(i.detected_at) - t0) for i in found]}; "
          f"stragglers {stragglers}; {found[0].explanation if found else ''}")
    assert st["state"] == "failed", st
    # A hang as a rule; a node lost when the crawl delays the host's own agent past the poll's 10 s.
    [first] = found
    assert first.kind in ("hang", "node_lost") and first.hosts == [victim], (first.kind, first.hosts,
                                                                               first.explanation)
    if first.kind == "hang":
        assert "link probe" in first.explanation and first.category == "network_switch_cable", first.explanation
    assert _ts(first.detected_at) - t0 < 60, "found within a minute"


def test_spread_job_survives_a_partition_then_a_raylet_kill_on_hosts_without_the_state_folder(
        cluster: NetnsCluster) -> None:
    """Six ranks (tp=2) over three hosts, two faults in one job. h3's cable is pulled at step 6: the host is
    found, recorded as a network fault timed from when it was last heard, and cordoned; dp shrinks onto h1
    and h2. Then h2's raylet is SIGKILLed (by pid, from h2's own process list): recorded as a lost Ray node
    on a host that still answers, cordoned, and the job finishes on h1 alone. No host but the head sees the
    state folder."""
    c = cluster
    job = _job(c, "part", dp=3, tp=2, steps=24, interval=4,
               reliability={"allow_shrink_dp": True, "max_restarts": 4, "hang_timeout_s": 60})
    r = c.run(c.head, [ORCH, "submit", str(job), "--address", c.address, "--no-follow"], timeout_s=120)
    assert r.returncode == 0, r.stderr

    st = wait_for(lambda: _at_step(c, "part", 6), 300, "step 6", interval_s=2.0)
    hosts = {x["rank"]: x["host"] for x in st["ranks"]}
    assert set(hosts.values()) == {"h1", "h2", "h3"}, hosts
    assert all(hosts[2 * g] == hosts[2 * g + 1] for g in range(3)), f"a TP group spans hosts: {hosts}"
    # Six steps on three hosts, one of them with its clock three days ahead: nothing found, not a straggler.
    assert not _catalog(c).interruptions("part"), [i.explanation for i in _catalog(c).interruptions("part")]
    c.link(c.host("h3"), up=False)
    cut_at = time.time()

    st = wait_for(lambda: _at_step(c, "part", 12, attempt=2), 400, "step 12 of attempt 2", interval_s=2.0)
    assert {x["host"] for x in st["ranks"]} == {"h1", "h2"}, st["ranks"]
    raylet = c.raylet_pid(c.host("h2"))
    os.kill(raylet, signal.SIGKILL)
    killed_at = time.time()
    st = _wait_end(c, "part", 400)
    assert st["state"] == "succeeded" and st["step"] == 24, st

    cat = _catalog(c)
    cut, killed = [i for i in cat.interruptions("part") if i.kind != "straggler"]
    for i, at in ((cut, cut_at), (killed, killed_at)):
        print(f"{i.kind} {i.hosts} {i.category}: fault {_ts(i.fault_at) - at:+.1f} s, detected "
              f"{_ts(i.detected_at) - at:+.1f} s after the fault was injected")
    assert cut.kind == "node_lost" and cut.hosts == ["h3"], (cut.kind, cut.hosts, cut.explanation)
    assert cut.category == "network_switch_cable", (cut.category, cut.explanation)
    # Fault time: when h3 was last heard from (before the cut, give or take a poll); detected seconds later.
    fault, detected = _ts(cut.fault_at), _ts(cut.detected_at)
    assert cut_at - 15 < fault <= cut_at + 2 < detected, (cut_at, fault, detected)
    assert killed.kind == "node_lost" and killed.hosts == ["h2"], (killed.kind, killed.hosts, killed.explanation)
    assert killed.category != "network_switch_cable", (killed.category, killed.explanation)
    assert killed_at - 15 < _ts(killed.fault_at) <= _ts(killed.detected_at), killed_at
    assert {"h2", "h3"} <= set(cat.cordoned_hosts())
    attempts = cat.require_job("part").attempts
    second, last = attempts[1], attempts[-1]
    assert second.layout["dp"] == 2 and {x.host for x in second.ranks} == {"h1", "h2"}, second.layout
    assert last.layout["dp"] == 1 and last.layout["shrunk_from"] == 3, last.layout
    assert {x.host for x in last.ranks} == {"h1"}

    # Only the head holds the controller's folder; every rank's log is on its own host.
    h2_files = _files_on(c, "h2", c.state_dir)
    assert not any(f.endswith(("catalog.db", "/.controller")) for f in h2_files), h2_files
    first_logs = {Path(f).name for f in h2_files if "/runs/part/logs/attempt-001/" in f}
    assert first_logs == {f"rank-{r:05d}.log" for r, h in hosts.items() if h == "h2"}
    head_logs = {p.name for p in (c.state_dir / "runs" / "part" / "logs" / "attempt-001").glob("rank-*.log")}
    assert head_logs == {f"rank-{r:05d}.log" for r, h in hosts.items() if h == "h1"}
    assert any((c.checkpoints / "part").iterdir()), "checkpoints go to the one shared folder"
    # Rank 0 writes its step rows on its own host (the head or not, as Ray places it); the controller's
    # folder has them all either way.
    rows = [json.loads(x) for x in (c.state_dir / "runs" / "part" / "metrics.jsonl").read_text().splitlines()]
    assert {r["step"] for r in rows} == set(range(1, 25)), sorted(r["step"] for r in rows)


def _at_step(c: NetnsCluster, job: str, step: int, attempt: int = 1) -> dict[str, Any] | None:
    st = _status(c, job)
    assert st.get("state") not in ("failed", "stopped", "succeeded"), st
    return st if st.get("step", 0) >= step and st.get("attempt", 0) >= attempt and st.get("ranks") else None
