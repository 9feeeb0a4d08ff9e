"""Each failed checkpoint save rank 0 reports is seen once by the monitor and recorded as a non-interrupting
incident by the catalog writer."""

from __future__ import annotations

from pathlib import Path

from health.detectors import HangConfig
from health.observations import observation_from_poll
from orchestrator.catalog.repository import Catalog
from orchestrator.classifier import classify
from orchestrator.controller.catalog_writer import CatalogWriter
from orchestrator.controller.monitor import MonitorState, tick
from tests.controller_fakes import FakeClock


def test_each_failed_save_in_the_beacon_is_recorded_once(tmp_path: Path) -> None:
    cat = Catalog(f"sqlite:///{tmp_path / 'c.db'}")
    cat.create_job("j", {}, 1, 20, str(tmp_path), None)
    clock = FakeClock()
    writer = CatalogWriter(cat, "j", clock)
    writer.attempt_started(1, 0, {"dp": 1})
    state = MonitorState(start_step=0, last_progress_at=clock.now, total_steps=20)

    ok = {"step": 6, "phase": "train", "checkpoint_step": 4, "checkpoint_path": "/c/step-00000004", "time": clock.now}
    full = {**ok, "step": 9, "checkpoint_failures": 1, "checkpoint_failed_step": 8,
            "checkpoint_consecutive_failures": 1, "checkpoint_error": "rank 1: [Errno 28] No space left on device"}
    again = {**full, "step": 13, "checkpoint_failures": 2, "checkpoint_failed_step": 12,
             "checkpoint_consecutive_failures": 2}
    for beacon in (ok, full, full, again):
        clock.now += 1
        obs = [observation_from_poll({"rank": 0, "running": True, "beacon": {**beacon, "time": clock.now}}, "h0",
                                     clock.now)]
        res = tick(state, obs, [], clock.now, 1, HangConfig(timeout_s=60))
        if res.checkpoint is not None:
            writer.checkpoint_committed(1, res.checkpoint)
        if res.save_failure is not None:
            writer.checkpoint_failed(1, {**res.save_failure,
                                         "verdict": classify(res.save_failure["error"]).to_dict()})
    got = cat.interruptions("j")
    assert [(i.kind, i.step_at_fault, i.steps_lost, i.hosts) for i in got] == [
        ("checkpoint_failed", 8, 0, ["h0"]), ("checkpoint_failed", 12, 0, ["h0"])]
    assert "No space left on device" in got[0].explanation
    assert [c.step for c in cat.checkpoints("j")] == [4]
