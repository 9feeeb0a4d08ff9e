"""The controller records each failed checkpoint save rank 0 reports, once, as a non-interrupting incident."""

from __future__ import annotations

from pathlib import Path

from health.observations import observation_from_poll
from orchestrator.catalog.repository import Catalog
from orchestrator.controller.controller import JobController
from orchestrator.spec import JobSpec
from tests.conftest import small_job


def test_each_failed_save_in_the_beacon_is_recorded_once(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'c.db'}"
    spec = JobSpec.model_validate(small_job("j"))
    Catalog(url).create_job("j", spec.model_dump(mode="json", by_alias=True), 2, 12, str(tmp_path), None)
    ctrl = JobController(spec.model_dump(mode="json", by_alias=True), url, str(tmp_path), autostart=False)

    def poll(beacon: dict) -> list:
        return [observation_from_poll({"rank": 0, "running": True, "beacon": beacon}, "h0", 0.0)]

    ok = {"step": 6, "checkpoint_step": 4, "checkpoint_path": "/c/step-00000004"}
    full = {**ok, "step": 9, "checkpoint_failures": 1, "checkpoint_failed_step": 8,
            "checkpoint_consecutive_failures": 1, "checkpoint_error": "rank 1: [Errno 28] No space left on device"}
    seen = 0
    for beacon in (ok, full, full, {**full, "step": 13, "checkpoint_failures": 2, "checkpoint_failed_step": 12,
                                     "checkpoint_consecutive_failures": 2}):
        seen = ctrl._track_checkpoints(poll(beacon), seen, 1)
    got = ctrl.catalog.interruptions("j")
    assert [(i.kind, i.step_at_fault, i.steps_lost, i.hosts) for i in got] == [
        ("checkpoint_failed", 8, 0, ["h0"]), ("checkpoint_failed", 12, 0, ["h0"])]
    assert "No space left on device" in got[0].explanation
    assert [c.step for c in ctrl.catalog.checkpoints("j")] == [4]
