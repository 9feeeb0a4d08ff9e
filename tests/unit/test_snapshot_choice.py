"""The choice of the snapshot to resume from, and the snapshot folder's commit rules (no torch, no Ray)."""

from __future__ import annotations

import hashlib
import time
from pathlib import Path

import pytest

from trainer import snapshot_files as sf

A, B = "layout-a", "layout-b"


def test_newest_step_every_rank_holds() -> None:
    per_rank = [{20: A, 25: A}, {20: A, 25: A}, {20: A}]
    assert sf.choose_step(per_rank, A, committed_step=0) == 20


def test_a_rank_without_snapshots_means_the_checkpoint() -> None:
    assert sf.choose_step([{20: A, 25: A}, {}], A, committed_step=0) is None


def test_only_newer_than_the_committed_checkpoint() -> None:
    per_rank = [{20: A, 25: A}, {20: A, 25: A}]
    assert sf.choose_step(per_rank, A, committed_step=25) is None
    assert sf.choose_step(per_rank, A, committed_step=24) == 25
    assert sf.choose_step(per_rank, A, committed_step=20) == 25


def test_another_layout_means_the_checkpoint() -> None:
    per_rank = [{20: A, 25: A}, {20: A, 25: A}]
    assert sf.choose_step(per_rank, B, committed_step=0) is None
    # One rank's newest was taken under another layout: the older common one is chosen.
    assert sf.choose_step([{20: A, 25: B}, {20: A, 25: A}], A, committed_step=0) == 20


def test_no_ranks() -> None:
    assert sf.choose_step([], A, committed_step=0) is None


def _commit(folder: Path, step: int, data: bytes = b"x" * 10) -> sf.SnapshotMeta:
    meta = sf.SnapshotMeta(step, 0, A, len(data), hashlib.sha256(data).hexdigest(), 0.0)
    sf.commit(folder, meta, data)
    return meta


def test_a_snapshot_exists_only_with_its_marker_and_data(tmp_path: Path) -> None:
    _commit(tmp_path, 5)
    _commit(tmp_path, 10)
    sf.marker_path(tmp_path, 10).unlink()  # a write cut short before its marker
    _commit(tmp_path, 15)
    sf.data_path(tmp_path, 15).unlink()  # data gone, marker left
    (tmp_path / "step-00000020.json").write_text("{not json")
    assert [s.step for s in sf.list_snapshots(tmp_path)] == [5]


def test_prune_keeps_the_newest_and_drops_another_history(tmp_path: Path) -> None:
    for step in (5, 10, 15, 20):
        _commit(tmp_path, step)
    (tmp_path / ".step-00000025.pt.123.tmp").write_bytes(b"half")
    sf.prune(tmp_path, keep=2)
    assert [s.step for s in sf.list_snapshots(tmp_path)] == [15, 20]
    assert not list(tmp_path.glob("*.tmp"))
    sf.prune(tmp_path, keep=2, above=17)
    assert [s.step for s in sf.list_snapshots(tmp_path)] == [15]
    assert not sf.data_path(tmp_path, 20).exists()


def test_read_verified_catches_a_changed_byte(tmp_path: Path) -> None:
    meta = _commit(tmp_path, 5, b"0123456789")
    assert sf.read_verified(tmp_path, meta) == b"0123456789"
    sf.data_path(tmp_path, 5).write_bytes(b"0123456780")
    with pytest.raises(OSError, match="sha256"):
        sf.read_verified(tmp_path, meta)
    sf.data_path(tmp_path, 5).write_bytes(b"012345678")
    with pytest.raises(OSError, match="bytes"):
        sf.read_verified(tmp_path, meta)


def test_a_resume_from_a_snapshot_corrects_the_interruption_and_the_attempt(tmp_path: Path) -> None:
    from health.observations import RankObservation
    from orchestrator.catalog.repository import Catalog
    from orchestrator.controller.callbacks import InterruptionRecord
    from orchestrator.controller.catalog_writer import CatalogWriter
    from orchestrator.controller.snapshots import note_resume

    cat = Catalog(f"sqlite:///{tmp_path / 'c.db'}")
    cat.create_job("j", {"name": "j"}, world_size=2, steps_total=60, run_dir="/tmp/x", ray_address=None)
    w = CatalogWriter(cat, "j", time)
    w.attempt_started(1, 0, {"dp": 2})
    # The crash at step 23: the controller knows only the committed checkpoint (none: step 0).
    w.interrupted(InterruptionRecord(job="j", attempt=1, planned=False, kind="crash", category="software",
                                     component="trainer", confidence=1.0, explanation="rank 1 SIGKILL",
                                     decision="retry", step_at_fault=23, resume_step=0, steps_lost=23))
    w.attempt_started(2, 0, {"dp": 2})
    layout: dict = {"dp": 2}
    obs = [RankObservation(rank=r, host="h", observed_at=0.0, alive=True,
                           resumed={"kind": "snapshot", "step": 20, "path": "p"})
           for r in (1, 0)]
    assert note_resume(layout, obs) and not note_resume(layout, obs)
    w.layout_changed(2, layout)
    [i] = cat.interruptions("j")
    assert (i.resume_step, i.steps_lost) == (20, 3)
    a = cat.get_attempt("j", 2)
    assert a is not None and a.start_step == 20 and a.layout["resumed_from"]["kind"] == "snapshot"


def test_the_newest_snapshot_every_rank_holds_reaches_the_attempt_record(tmp_path: Path) -> None:
    from health.observations import RankObservation, observation_from_poll
    from orchestrator.catalog.repository import Catalog
    from orchestrator.controller.catalog_writer import CatalogWriter
    from orchestrator.controller.snapshots import note_snapshot

    def obs(*steps: int | None) -> list:
        return [RankObservation(rank=r, host="h", observed_at=0.0, alive=True, snapshot_step=s)
                for r, s in enumerate(steps)]

    layout: dict = {"dp": 3}
    assert not note_snapshot(layout, obs(10, 10), world_size=3)  # a rank not heard from holds nothing
    assert not note_snapshot(layout, obs(10, None, 10), world_size=3)
    assert note_snapshot(layout, obs(20, 10, 20), world_size=3) and layout["snapshot_step"] == 10
    assert not note_snapshot(layout, obs(20, 10, 20), world_size=3)  # recorded once per step
    assert note_snapshot(layout, obs(30, 20, 20), world_size=3) and layout["snapshot_step"] == 20
    # The beacon's key is what the trainer writes after each snapshot.
    assert observation_from_poll({"rank": 0, "running": True, "beacon": {"step": 7, "snapshot_step": 5}},
                                 "h", 0.0).snapshot_step == 5

    cat = Catalog(f"sqlite:///{tmp_path / 'c.db'}")
    cat.create_job("j", {"name": "j"}, world_size=3, steps_total=60, run_dir="/tmp/x", ray_address=None)
    w = CatalogWriter(cat, "j", time)
    w.attempt_started(1, 0, {"dp": 3})
    w.layout_changed(1, layout)
    a = cat.get_attempt("j", 1)
    assert a is not None and a.layout["snapshot_step"] == 20


def _placed(*hosts: str) -> list:
    from orchestrator.controller.callbacks import RankPlacement

    return [RankPlacement(r, h, f"node-{h}") for r, h in enumerate(hosts)]


def test_peers_are_on_the_next_host_and_absent_on_one_host() -> None:
    from orchestrator.controller.snapshots import peer_ranks

    assert peer_ranks(_placed("a", "a", "b", "b")) == {0: 2, 1: 3, 2: 0, 3: 1}
    assert peer_ranks(_placed("a", "b", "c")) == {0: 1, 1: 2, 2: 0}
    assert peer_ranks(_placed("a", "a")) == {0: None, 1: None}


def test_a_rank_moved_to_a_spare_gets_the_newest_copies_from_its_peer() -> None:
    from orchestrator.controller.snapshots import Transfer, restore_plan

    # Host b was lost: ranks 2 and 3 now run on spare c; host a holds copies of their snapshots.
    placed = _placed("a", "a", "c", "c")
    have = {"a": {"local": {0: {15: {}, 20: {}}, 1: {15: {}, 20: {}}},
                  "held": {2: {15: {}, 20: {}}, 3: {10: {}, 15: {}}}},
            "c": {"local": {}, "held": {}}}
    assert restore_plan(placed, have) == [Transfer(2, 15, "a", "held", "c"), Transfer(2, 20, "a", "held", "c"),
                                          Transfer(3, 10, "a", "held", "c"), Transfer(3, 15, "a", "held", "c")]
    # Everyone in place: nothing to copy.
    have["c"] = {"local": {2: {15: {}, 20: {}}, 3: {15: {}, 20: {}}}, "held": {}}
    assert restore_plan(placed, have) == []


def test_a_copy_travels_checked(tmp_path: Path) -> None:
    src, dst = tmp_path / "host-a", tmp_path / "host-b"
    _commit(sf.folder_of(src, "local", 3), 5, b"abc")
    marker, data = sf.read_snapshot(src, "local", 3, 5)
    sf.install(dst, sf.HELD, 3, marker, data)
    assert sf.inventory(dst) == {"local": {}, "held": {3: {5: marker}}}
    with pytest.raises(OSError, match="damaged"):
        sf.install(dst, "local", 3, marker, b"abd")
    assert sf.inventory(dst)["local"] == {}


def test_a_finished_jobs_folder_is_removed_and_nothing_else_ever(tmp_path: Path) -> None:
    job = tmp_path / "job-0123456789ab"
    _commit(sf.folder_of(sf.host_root(job, "node-a"), "local", 0), 10)
    _commit(sf.folder_of(sf.host_root(job, "node-a"), sf.HELD, 1), 10)
    sf.remove_job_folder(job)
    assert not job.exists()
    sf.remove_job_folder(job)  # already gone: nothing to do

    wrong = tmp_path / "home"
    (wrong / "host-node-a").mkdir(parents=True)
    (wrong / "notes.txt").write_text("keep me")
    with pytest.raises(OSError, match="not removed"):
        sf.remove_job_folder(wrong)
    assert (wrong / "notes.txt").read_text() == "keep me"
