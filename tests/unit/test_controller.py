"""The controller stepped one iteration at a time, with a fake worker group, fake spares and a fake clock.

The catalog is real (SQLite): what the controller records, and what a rebuilt
controller reads back, is what production would write and read.
"""

from __future__ import annotations

import sqlite3
from datetime import UTC, datetime
from pathlib import Path

import pytest

from orchestrator.catalog.repository import Catalog
from orchestrator.controller import preflight
from orchestrator.controller.callbacks import CallbackList
from orchestrator.controller.catalog_writer import CatalogWriter
from orchestrator.controller.controller import Controller
from orchestrator.controller.state import ControllerState as S
from orchestrator.spec import JobSpec
from tests.conftest import small_job
from tests.controller_fakes import FakeCheckpoints, FakeClock, FakeSpares, FakeWorkerGroup, Fault

XID79 = ("Mar  3 04:12:01 {host} kernel: NVRM: Xid (PCI:0000:18:00): 79, pid=4242, GPU has fallen off the bus.\n"
         "RuntimeError: NCCL communicator was aborted")


class Rig:
    """One controller over a fake cluster of `hosts`, each with `slots` rank slots."""

    def __init__(self, tmp: Path, *, hosts: int = 3, slots: int = 2, dp: int = 2, tp: int = 1, steps: int = 12,
                 spares: int = 0, shrink: bool = False, max_restarts: int = 5, faults: dict | None = None,
                 db: Path | None = None, clock: FakeClock | None = None,
                 checkpoints: FakeCheckpoints | None = None, capacity_wait_s: float = 0.0,
                 preflight_max_age_s: float = 600.0) -> None:
        raw = small_job("job", steps=steps, dp=dp, tp=tp,
                        reliability={"max_restarts": max_restarts, "spares": spares, "allow_shrink_dp": shrink,
                                     "hang_timeout_s": 30, "capacity_wait_s": capacity_wait_s,
                                     "preflight_max_age_s": preflight_max_age_s})
        self.spec = JobSpec.model_validate(raw)
        self.db = db or tmp / "catalog.db"
        self.catalog = Catalog(f"sqlite:///{self.db}")
        if self.catalog.get_job("job") is None:
            self.catalog.create_job("job", raw, self.spec.world_size, steps, str(tmp / "run"), None)
        self.clock = clock or FakeClock()
        self.checkpoints = checkpoints or FakeCheckpoints()
        names = [f"h{i}" for i in range(hosts)]
        self.workers = FakeWorkerGroup(self.clock, self.checkpoints, names, slots, steps, faults=faults or {})
        self.spares = FakeSpares(hosts=names, count=spares)
        self.ctl = Controller(self.spec, self.catalog, tmp / "run", tmp / "ckpt", workers=self.workers,
                              spares=self.spares, checkpoints=self.checkpoints, clock=self.clock,
                              callbacks=CallbackList([CatalogWriter(self.catalog, "job", self.clock)]),
                              poll_interval_s=0.5)

    def until(self, *states: S, limit: int = 500) -> S:
        for _ in range(limit):
            self.ctl.step()
            if self.ctl.state in states:
                return self.ctl.state
        raise AssertionError(f"never reached {states}; stuck in {self.ctl.state}")

    def run(self) -> S:
        return self.until(S.SUCCEEDED, S.FAILED, S.STOPPED)

    def interruptions(self) -> list:
        return [i for i in self.catalog.interruptions("job") if i.kind != "straggler"]

    def layouts(self) -> list[dict]:
        return [a.layout for a in self.catalog.require_job("job").attempts]


def test_every_state_in_order_to_success(tmp_path: Path) -> None:
    rig = Rig(tmp_path)
    seen = [rig.ctl.state]
    more = True
    while more:
        more = rig.ctl.step()
        if rig.ctl.state != seen[-1]:
            seen.append(rig.ctl.state)
    assert seen == [S.PENDING, S.PLACING, S.RUNNING, S.SUCCEEDED]
    job = rig.catalog.require_job("job")
    assert job.state == "succeeded" and job.last_step == 12
    [a] = job.attempts
    assert a.state == "succeeded" and a.layout["scaling"] == "new_gang"
    assert {r.state for r in a.ranks} == {"exited"} and len(a.ranks) == 2
    assert [c.step for c in rig.catalog.checkpoints("job")] == [4, 8, 12]
    assert rig.workers.calls[-1] == "shutdown"


def test_crash_restarts_in_place_on_the_same_gang(tmp_path: Path) -> None:
    rig = Rig(tmp_path, faults={1: Fault("crash", at_step=6, rank=1)})
    assert rig.run() is S.SUCCEEDED
    assert rig.workers.calls.count("place:2") == 1 and "adopt" in rig.workers.calls
    [i] = rig.interruptions()
    assert i.kind == "crash" and i.ranks == [1] and i.resume_step == 4 and i.steps_lost == 2
    assert i.category == "unknown" and not i.planned and i.resumed_at is not None
    assert [a.layout["scaling"] for a in rig.catalog.require_job("job").attempts] == ["new_gang", "reuse_gang"]
    assert rig.catalog.cordoned_hosts() == set()


def test_hardware_verdict_cordons_and_a_spare_takes_the_place(tmp_path: Path) -> None:
    # h0 and h1 hold the gang (2 ranks each, dp=4), h2 is the spare, h3 is free.
    rig = Rig(tmp_path, hosts=4, slots=2, dp=4, spares=1,
              faults={1: Fault("crash", at_step=5, rank=3, log=XID79.format(host="h1"))})
    assert rig.run() is S.SUCCEEDED
    [i] = rig.interruptions()
    assert i.category == "faulty_gpu" and i.hosts == ["h1"]
    assert "cordoning h1" in i.evidence["decision"]
    assert rig.catalog.cordoned_hosts() == {"h1"}
    first, second = rig.layouts()
    assert first["spares"] == ["h2"]
    assert second["scaling"] == "take_spare" and second["swapped_in"] == ["h2"] and second["dp"] == 4
    assert {r.host for r in rig.catalog.require_job("job").attempts[1].ranks} == {"h0", "h2"}
    assert second["spares"] == ["h3"], "a spare is held again from what is free after the swap"


def test_low_confidence_hardware_marks_suspect_and_keeps_the_host(tmp_path: Path) -> None:
    weak = "Mar  3 04:12:01 h1 kernel: NVRM: Xid (PCI:0000:18:00): 63, pid=1, row remapping event"
    rig = Rig(tmp_path, hosts=2, slots=2, dp=2, faults={1: Fault("crash", at_step=5, rank=0, log=weak)})
    rig.ctl.failure_cfg = type(rig.ctl.failure_cfg)(max_restarts=5, cordon_confidence=0.99)
    assert rig.run() is S.SUCCEEDED
    assert rig.catalog.cordoned_hosts() == set()
    [i] = rig.interruptions()
    assert i.category == "gpu_hbm3_memory" and "suspect" in i.evidence["decision"]
    assert rig.catalog.get_host("h0").state == "suspect"


def test_node_lost_without_spares_shrinks_data_parallelism(tmp_path: Path) -> None:
    rig = Rig(tmp_path, hosts=2, slots=2, dp=4, shrink=True, faults={1: Fault("node_lost", at_step=6, rank=2)})
    assert rig.run() is S.SUCCEEDED
    [i] = rig.interruptions()
    assert i.kind == "node_lost" and i.hosts == ["h1"]
    assert rig.catalog.cordoned_hosts() == {"h1"}
    second = rig.layouts()[1]
    assert second["scaling"] == "shrink" and second["dp"] == 2 and second["shrunk_from"] == 4


def test_no_capacity_and_no_shrink_stops_as_a_crash_loop(tmp_path: Path) -> None:
    rig = Rig(tmp_path, hosts=2, slots=2, dp=4, faults={1: Fault("node_lost", at_step=6, rank=2)})
    assert rig.run() is S.FAILED
    job = rig.catalog.require_job("job")
    assert "crash loop" in job.reason
    assert [i.kind for i in rig.interruptions()][1:] == ["placement_failed"] * 3
    assert "allow_shrink_dp is off" in rig.interruptions()[-1].explanation


def test_same_error_at_the_same_step_twice_fails_at_once(tmp_path: Path) -> None:
    bug = "Traceback (most recent call last):\nZeroDivisionError: division by zero at 0x7f3a"
    faults = {n: Fault("crash", at_step=6, rank=0, log=bug, signal=None) for n in (1, 2, 3, 4)}
    rig = Rig(tmp_path, max_restarts=10, faults=faults)
    assert rig.run() is S.FAILED
    assert len(rig.catalog.require_job("job").attempts) == 2
    assert "deterministic failure" in rig.catalog.require_job("job").reason


def test_config_error_is_not_retried(tmp_path: Path) -> None:
    rig = Rig(tmp_path, faults={1: Fault("config", at_step=0, rank=0)})
    assert rig.run() is S.FAILED
    job = rig.catalog.require_job("job")
    assert len(job.attempts) == 1 and "configuration error" in job.reason


def test_the_retry_budget_is_a_rate(tmp_path: Path) -> None:
    faults = {n: Fault("crash", at_step=4 * n + 1, rank=0) for n in (1, 2, 3)}
    rig = Rig(tmp_path, steps=20, max_restarts=1, faults=faults)
    rig.ctl.failure_cfg = type(rig.ctl.failure_cfg)(max_restarts=1, window_s=3600)
    assert rig.until(S.RESTARTING) is S.RESTARTING
    rig.clock.now += 7200  # the first failure leaves the window
    assert rig.until(S.RESTARTING) is S.RESTARTING
    # The third comes within the hour of the second: two in the window exceed max_restarts=1.
    assert rig.run() is S.FAILED
    assert "restart budget" in rig.catalog.require_job("job").reason


def test_hang_is_detected_and_restarted(tmp_path: Path) -> None:
    rig = Rig(tmp_path, faults={1: Fault("hang", at_step=5, rank=1)})
    assert rig.run() is S.SUCCEEDED
    [i] = rig.interruptions()
    assert i.kind == "hang" and i.ranks == [1]


def test_a_stall_no_process_explains_names_the_host_whose_link_probe_is_the_outlier(tmp_path: Path) -> None:
    rig = Rig(tmp_path, slots=1, faults={1: Fault("stall", at_step=5, rank=1)})
    rig.until(S.RUNNING)
    slow = next(p.host for p in rig.workers.placements if p.rank == 1)
    rig.workers.link_results = {h: {"rtt_s": 0.001, "transfer_s": 0.004 + 0.001 * i, "error": None}
                                for i, h in enumerate(sorted({p.host for p in rig.workers.placements}))}
    rig.workers.link_results[slow] = {"rtt_s": 0.4, "transfer_s": 3.5, "error": None}
    assert rig.run() is S.SUCCEEDED
    [i] = rig.interruptions()
    assert i.kind == "hang" and i.hosts == [slow] and i.ranks == [1], (i.hosts, i.ranks, i.explanation)
    assert i.category == "network_switch_cable" and "link probe" in i.explanation


def test_a_stopped_process_explains_a_hang_whatever_the_link_probe_says(tmp_path: Path) -> None:
    rig = Rig(tmp_path, slots=1, faults={1: Fault("hang", at_step=5, rank=1)})
    rig.until(S.RUNNING)
    other = next(p.host for p in rig.workers.placements if p.rank == 0)
    rig.workers.link_results = {p.host: {"rtt_s": 0.001, "transfer_s": 0.004, "error": None}
                                for p in rig.workers.placements}
    rig.workers.link_results[other] = {"rtt_s": 0.4, "transfer_s": 3.5, "error": None}
    assert rig.run() is S.SUCCEEDED
    [i] = rig.interruptions()
    assert i.kind == "hang" and i.ranks == [1] and other not in i.hosts, (i.hosts, i.explanation)


def test_stop_request_is_a_planned_interruption(tmp_path: Path) -> None:
    rig = Rig(tmp_path)
    rig.until(S.RUNNING)
    rig.ctl.step()
    rig.ctl.request_stop("stopped by the operator")
    assert rig.run() is S.STOPPED
    [i] = rig.interruptions()
    assert i.planned and i.kind == "operator_stop"
    assert "stop" in rig.workers.calls


def test_an_open_attempt_left_by_a_dead_controller_is_closed_and_resumed(tmp_path: Path) -> None:
    rig = Rig(tmp_path)
    rig.until(S.RUNNING)
    for _ in range(5):
        rig.ctl.step()
    # The controller dies here; a new one starts over the same catalog and checkpoints.
    rig.workers.dead.add("h0")
    again = Rig(tmp_path, db=rig.db, clock=rig.clock, checkpoints=rig.checkpoints)
    again.workers.dead.add("h0")
    assert again.run() is S.SUCCEEDED
    job = again.catalog.require_job("job")
    assert [a.state for a in job.attempts] == ["lost", "succeeded"]
    [i] = again.interruptions()
    assert i.kind == "node_lost" and i.hosts == ["h0"] and again.catalog.cordoned_hosts() == {"h0"}


@pytest.mark.parametrize("case", ["shrink", "spare"])
def test_rebuilt_controller_decides_like_one_that_never_died(tmp_path: Path, case: str) -> None:
    if case == "shrink":
        kw = dict(hosts=2, slots=2, dp=4, shrink=True, max_restarts=3)
        faults = {1: Fault("node_lost", at_step=6, rank=2), 2: Fault("crash", at_step=9, rank=0)}
    else:
        kw = dict(hosts=4, slots=2, dp=4, spares=1, max_restarts=3)
        faults = {1: Fault("crash", at_step=5, rank=3, log=XID79.format(host="h1")),
                  2: Fault("crash", at_step=9, rank=1, log=XID79.format(host="h0"))}
    a = Rig(tmp_path / "a", faults=faults, **kw)
    a.until(S.RESTARTING)
    a.until(S.RESTARTING)  # two failures in: mid-way through the swap or the shrink
    snap = tmp_path / "snapshot.db"
    with sqlite3.connect(a.db) as src, sqlite3.connect(snap) as dst:
        src.backup(dst)  # the catalog as it stood (WAL included)
    b = Rig(tmp_path / "b", db=snap, faults=dict(faults), clock=FakeClock(a.clock.now),
            checkpoints=FakeCheckpoints(), **kw)
    b.checkpoints.steps = list(a.checkpoints.steps)
    b.workers.dead = set(a.workers.dead)
    b.ctl.step()  # PENDING: rebuild from the catalog
    def key(o):
        return (o.kind, o.committed_step, o.start_step, o.culprit_hosts, o.step_at_fault, o.signature)
    assert [key(o) for o in b.ctl.history.outcomes] == [key(o) for o in a.ctl.history.outcomes]
    assert b.ctl.dp == a.ctl.dp
    a.workers.placements = []  # neither keeps a gang: the rebuilt one has none to keep
    a.ctl.sm.state = S.RESTARTING
    a.until(S.RUNNING)
    b.until(S.RUNNING)
    la, lb = a.layouts()[-1], b.layouts()[-1]
    assert (la["dp"], la.get("shrunk_from")) == (lb["dp"], lb.get("shrunk_from"))
    assert sorted(p.host for p in a.workers.placements) == sorted(p.host for p in b.workers.placements)
    assert a.catalog.cordoned_hosts() == b.catalog.cordoned_hosts()


def test_the_final_save_after_the_last_step_is_not_a_hang() -> None:
    from health.detectors import HangConfig
    from health.observations import RankObservation
    from orchestrator.controller.monitor import MonitorState, tick

    st = MonitorState(start_step=0, last_progress_at=0.0, total_steps=10)
    hang = HangConfig(timeout_s=60)
    for step in range(1, 11):  # 0.5 s steps: the learned limit is 5 s
        obs = [RankObservation(r, "h0", step * 0.5, True, step=step, step_seconds=0.5, heartbeat=step * 0.5,
                               phase="train") for r in range(2)]
        assert tick(st, obs, [], step * 0.5, 2, hang).failure is None
    # Every rank is past its last step, flushing the final checkpoint: 30 s without a step is no hang ...
    late = [RankObservation(r, "h0", 35.0, True, step=10, heartbeat=35.0, phase="train") for r in range(2)]
    assert tick(st, late, [], 35.0, 2, hang).failure is None
    # ... but the job's own hang_timeout_s still bounds it.
    assert tick(st, late, [], 70.0, 2, hang).failure is not None


def test_a_resume_from_a_snapshot_is_not_the_attempts_first_step() -> None:
    """Started from checkpoint 50, the ranks load snapshot 60: the interruption ends with step 61, not at the load."""
    from health.detectors import HangConfig
    from health.observations import RankObservation
    from orchestrator.controller.monitor import MonitorState, tick

    st = MonitorState(start_step=50, last_progress_at=0.0, total_steps=100, checkpoint_step=50)
    hang = HangConfig(timeout_s=60)
    resumed = {"kind": "snapshot", "step": 60, "path": "/dev/shm/x"}

    def obs(step: int, t: float, phase: str) -> list[RankObservation]:
        return [RankObservation(r, "h0", t, True, step=step, step_seconds=0.3, heartbeat=t, phase=phase,
                                resumed=resumed) for r in range(2)]

    res = tick(st, obs(60, 1.0, "resumed"), [], 1.0, 2, hang)
    assert res.progress is None and res.failure is None
    res = tick(st, obs(61, 1.5, "train"), [], 1.5, 2, hang)
    assert res.progress is not None and res.progress.first_step and res.progress.step == 61


def test_a_host_with_repeated_hardware_faults_is_cordoned_as_a_lemon(tmp_path: Path) -> None:
    weak = "Mar  3 04:12:01 h1 kernel: NVRM: Xid (PCI:0000:18:00): 63, pid=1, row remapping event"
    rig = Rig(tmp_path, hosts=3, slots=2, dp=2, faults={1: Fault("crash", at_step=5, rank=1, log=weak)})
    rig.ctl.failure_cfg = type(rig.ctl.failure_cfg)(max_restarts=5, cordon_confidence=0.99)
    # An earlier job already lost time to h0's hardware.
    rig.catalog.create_job("other", {}, 2, 10, "/tmp/other", None)
    rig.catalog.record_interruption(job_name="other", attempt=1, planned=False, category="gpu_hbm3_memory",
                                    component="gpu", confidence=0.9, kind="crash", hosts=["h0"],
                                    detected_at=datetime.now(UTC))
    assert rig.run() is S.SUCCEEDED
    # This fault alone would only make h0 suspect (confidence below 0.99); with the earlier one it is a lemon.
    assert rig.catalog.cordoned_hosts() == {"h0"}
    [i] = rig.interruptions()
    assert "lemon" in i.evidence["decision"]
    events = rig.catalog.get_host("h0").events
    assert events[-1].to_state == "cordoned" and "lemon" in events[-1].reason


def test_auto_checkpoint_interval_follows_the_failures_seen(tmp_path: Path) -> None:
    faults = {1: Fault("crash", at_step=60, rank=0), 2: Fault("crash", at_step=66, rank=0)}
    rig = Rig(tmp_path, steps=80, max_restarts=5, faults=faults)
    ck = rig.spec.checkpoint.model_copy(update={"interval_steps": "auto", "auto_initial_steps": 50,
                                                "auto_min_steps": 2, "auto_prior_mtbf_s": 10.0})
    rig.ctl.spec = rig.spec.model_copy(update={"checkpoint": ck})
    assert rig.run() is S.SUCCEEDED
    first, second, third = rig.layouts()
    assert first["checkpoint_interval_steps"] == 50 and "auto_initial_steps" in first["checkpoint_interval_reason"]
    # Failures every ~30 s against 0.02-s saves: Daly's optimum is a couple of 0.5-s steps.
    assert second["checkpoint_interval_steps"] < 10 and "1 failures" in second["checkpoint_interval_reason"]
    assert third["checkpoint_interval_steps"] <= second["checkpoint_interval_steps"]
    # Checkpoints followed: the second crash lost fewer steps than the first.
    lost = [i.steps_lost for i in rig.interruptions()]
    assert lost[1] < lost[0], lost


def test_auto_snapshot_interval_follows_the_failures_and_the_measured_snapshot_cost(tmp_path: Path) -> None:
    faults = {1: Fault("crash", at_step=30, rank=0), 2: Fault("crash", at_step=40, rank=0)}
    rig = Rig(tmp_path, steps=60, max_restarts=5, faults=faults)
    rig.workers.snapshot_cost = (0.004, 0.05)
    ck = rig.spec.checkpoint.model_copy(update={"interval_steps": "auto", "snapshot_interval_steps": 10,
                                                "auto_prior_mtbf_s": 10.0})
    rig.ctl.spec = rig.spec.model_copy(update={"checkpoint": ck})
    assert rig.run() is S.SUCCEEDED
    first, second, third = rig.layouts()
    assert first["snapshot_interval_steps"] == 10 and "measured" in first["snapshot_interval_reason"]
    # A failure every ~15-20 s against a 4-ms wait per snapshot: Daly's optimum is well under one 0.5-s step, so
    # the floor decides: a write takes 0.05 s, a tenth of a step, so every step.
    assert second["snapshot_interval_steps"] == 1 and "1 failures" in second["snapshot_interval_reason"]
    assert "snapshot blocks 0.004 s and takes 0.05 s" in second["snapshot_interval_reason"]
    assert third["snapshot_interval_steps"] == 1 and "2 failures" in third["snapshot_interval_reason"]
    assert rig.workers.snapshot_intervals == [10, 1, 1], "the ranks were started with the chosen interval"


def test_a_costly_snapshot_is_taken_less_often_and_never_closer_than_its_write(tmp_path: Path) -> None:
    faults = {1: Fault("crash", at_step=30, rank=0)}
    rig = Rig(tmp_path, steps=40, max_restarts=5, faults=faults)
    rig.workers.snapshot_cost = (0.4, 1.6)  # the loop waits 0.4 s per snapshot; a write takes 3.2 steps
    ck = rig.spec.checkpoint.model_copy(update={"interval_steps": "auto", "snapshot_interval_steps": 50,
                                                "auto_prior_mtbf_s": 10.0})
    rig.ctl.spec = rig.spec.model_copy(update={"checkpoint": ck})
    assert rig.run() is S.SUCCEEDED
    _, second = rig.layouts()
    assert 4 <= second["snapshot_interval_steps"] < 50, second["snapshot_interval_reason"]


XID79_PROBE = "NVRM: Xid (PCI:0000:18:00): 79, GPU 0: GPU has fallen off the bus"


def test_preflight_cordons_a_failing_host_and_a_spare_takes_its_place(tmp_path: Path) -> None:
    rig = Rig(tmp_path, hosts=3, slots=2, dp=4, spares=1)
    rig.workers.preflight_fails = {"h1": [XID79_PROBE]}
    assert rig.run() is S.SUCCEEDED
    assert rig.workers.preflights == [["h0", "h1"], ["h0", "h2"]]
    assert "start:1" not in rig.workers.calls and "start:2" in rig.workers.calls
    [i] = rig.interruptions()
    assert i.kind == "preflight" and i.hosts == ["h1"] and i.ranks == [2, 3]
    assert i.category == "faulty_gpu" and "host=h1 gpu=0 source=nvml" in i.evidence_text
    assert rig.catalog.cordoned_hosts() == {"h1"}
    first, second = rig.layouts()
    assert first["preflight_s"] == pytest.approx(2.0) and second["preflight_s"] == pytest.approx(2.0)
    assert second["scaling"] == "take_spare" and second["swapped_in"] == ["h2"]
    assert {r.host for r in rig.catalog.require_job("job").attempts[1].ranks} == {"h0", "h2"}


def test_a_host_failing_preflight_is_cordoned_whatever_the_category(tmp_path: Path) -> None:
    # A checkpoint-storage write failure is not a hardware category, yet the host must not start ranks.
    rig = Rig(tmp_path, hosts=2, slots=2, dp=4, shrink=True)
    rig.workers.preflight_fails = {"h1": ["checkpoint storage /ckpt: write check failed: [Errno 5] I/O error"]}
    assert rig.run() is S.SUCCEEDED
    assert rig.catalog.cordoned_hosts() == {"h1"}
    assert rig.layouts()[1]["scaling"] == "shrink" and rig.layouts()[1]["dp"] == 2


@pytest.mark.parametrize(("max_age_s", "checked"), [(600.0, False), (0.0, True), (1.0, True)])
def test_a_restart_in_place_after_a_software_fault_skips_a_recent_preflight(
        tmp_path: Path, max_age_s: float, checked: bool) -> None:
    # The crash comes after 6 steps of polling (seconds of the fake clock): a 1-s pass is too old by then.
    rig = Rig(tmp_path, faults={1: Fault("crash", at_step=6, rank=1)}, preflight_max_age_s=max_age_s)
    assert rig.run() is S.SUCCEEDED
    assert rig.workers.calls.index("preflight") < rig.workers.calls.index("start:1")
    assert rig.workers.calls.count("preflight") == 1 + checked
    first, second = rig.layouts()
    assert first["preflight"] == ("run: host h0 has not been preflighted for this job" if max_age_s else
                                  "run: every start is preflighted (preflight_max_age_s 0)")
    if checked:
        assert second["preflight"].startswith("run: ") and second["preflight_s"] > 0
    else:
        assert second["preflight"].startswith("skipped: ") and "preflight_s" not in second


def test_preflight_is_needed_for_a_new_a_named_or_a_stale_host() -> None:
    passed = {"a": 100.0, "b": 100.0}
    assert preflight.reason_to_check(["a", "b"], [], passed, 150.0, 600.0) is None
    assert preflight.reason_to_check(["a", "c"], [], passed, 150.0, 600.0) == \
        "host c has not been preflighted for this job"
    assert preflight.reason_to_check(["a", "b"], ["b"], passed, 150.0, 600.0) == \
        "host b was named by the last failure"
    assert preflight.reason_to_check(["a", "b"], [], passed, 800.0, 600.0) == \
        "host a last passed a preflight 700 s ago"
    assert preflight.reason_to_check(["a"], [], passed, 101.0, 0.0) is not None
    assert preflight.reason_to_check(["a", "b"], [], passed, 150.0, 600.0, last_gang=["a", "c"]) == \
        "host b joins the gang (it did not train in the last attempt)"
    assert preflight.reason_to_check(["a", "b"], [], passed, 150.0, 600.0, last_gang=["a", "b"]) is None


def test_bad_gpu_finding_from_a_probe_is_classified_and_cordons_the_host(tmp_path: Path) -> None:
    rig = Rig(tmp_path, hosts=3, slots=2, dp=4, spares=1,
              faults={1: Fault("bad_gpu", at_step=5, rank=3, probe=XID79_PROBE)})
    assert rig.run() is S.SUCCEEDED
    [i] = rig.interruptions()
    assert i.kind == "bad_gpu" and i.hosts == ["h1"] and i.category == "faulty_gpu"
    [p] = i.evidence["probes"]
    assert (p["host"], p["gpu"], p["source"], p["severity"]) == ("h1", 0, "nvml", "fail")
    assert rig.catalog.cordoned_hosts() == {"h1"}
    assert rig.layouts()[1]["swapped_in"] == ["h2"]


def test_suspected_hosts_probe_evidence_reaches_the_classifier(tmp_path: Path) -> None:
    # The rank's own log says nothing; the agent of its host kept an Xid 48 seen by the probes.
    rig = Rig(tmp_path, hosts=3, slots=2, dp=4, spares=1, faults={1: Fault("crash", at_step=5, rank=3)})
    rig.workers.probes_seen = {
        "h1": [{"probe": "gpu", "severity": "fail", "host": "h1", "gpu": 1, "source": "nvml", "at": 5.0,
                "message": "NVRM: Xid (PCI:0000:19:00): 48, GPU 1: double-bit ECC error (DBE)"}],
        "h0": [{"probe": "kernel_log", "severity": "fail", "host": "h0", "gpu": None, "source": "kernel/nvme",
                "at": 1.0, "message": "nvme0n1: I/O error"}]}
    assert rig.run() is S.SUCCEEDED
    [i] = rig.interruptions()
    assert i.category == "gpu_hbm3_memory" and i.hosts == ["h1"]
    assert "nvme" not in i.evidence_text  # only the suspected host's evidence
    assert rig.catalog.cordoned_hosts() == {"h1"}


def test_sdc_exit_names_the_replica_classified_and_cordoned(tmp_path: Path) -> None:
    # Rank 3 (on h1) is named by the SDC check; rank 0 (h0) dies of the broken collective a moment earlier.
    rig = Rig(tmp_path, hosts=3, slots=2, dp=4, spares=1, faults={1: Fault("sdc", at_step=5, rank=3, signal=None)})
    assert rig.run() is S.SUCCEEDED
    [i] = rig.interruptions()
    assert i.ranks == [3] and i.hosts == ["h1"] and i.category == "silent_data_corruption"
    assert rig.catalog.cordoned_hosts() == {"h1"}
    assert rig.layouts()[1]["swapped_in"] == ["h2"]


def test_loss_rollback_is_its_own_interruption_and_the_job_goes_on(tmp_path: Path) -> None:
    rig = Rig(tmp_path, steps=12, faults={1: Fault("rollback", at_step=7)})
    assert rig.run() is S.SUCCEEDED
    [i] = rig.interruptions()
    assert i.kind == "loss_rollback" and not i.planned and i.category == "software_bug"
    assert i.hosts == [] and i.resume_step == 4 and i.steps_lost == 3 and i.resumed_at is not None
    assert len(rig.catalog.require_job("job").attempts) == 1 and rig.catalog.cordoned_hosts() == set()
    from orchestrator.controller.recovery import history_from_catalog

    rebuilt = history_from_catalog(rig.catalog, rig.catalog.require_job("job"))
    assert [o.kind.value for o in rebuilt.outcomes] == ["succeeded"]  # a rollback does not end an attempt


def test_a_restart_waits_for_capacity_and_goes_on_when_a_host_joins(tmp_path: Path) -> None:
    """A lost node leaves the gang short; a host that joins within reliability.capacity_wait_s costs time,
    not a failed attempt (without the wait, three placement failures in a row failed the job)."""
    rig = Rig(tmp_path, hosts=2, slots=2, dp=4, faults={1: Fault("node_lost", at_step=6, rank=2)},
              capacity_wait_s=300.0)
    rig.until(S.RESTARTING)
    rig.until(S.PLACING)
    t0 = rig.clock.now
    for _ in range(5):  # short: it waits, placing nothing and recording no attempt
        rig.ctl.step()
        assert rig.ctl.state is S.PLACING
    assert rig.clock.now - t0 >= 20 and len(rig.catalog.require_job("job").attempts) == 1
    rig.workers.hosts.append("h2")  # a host joins the cluster
    assert rig.run() is S.SUCCEEDED
    assert [i.kind for i in rig.interruptions()] == ["node_lost"]
    assert {r.host for r in rig.catalog.require_job("job").attempts[-1].ranks} == {"h0", "h2"}


def test_a_stop_while_waiting_for_capacity_stops_without_another_attempt(tmp_path: Path) -> None:
    rig = Rig(tmp_path, hosts=2, slots=2, dp=4, faults={1: Fault("node_lost", at_step=6, rank=2)},
              capacity_wait_s=300.0)
    rig.until(S.RESTARTING)
    rig.until(S.PLACING)
    rig.ctl.step()
    rig.ctl.request_stop("operator stop")
    assert rig.run() is S.STOPPED
    assert len(rig.catalog.require_job("job").attempts) == 1
