from __future__ import annotations

import multiprocessing as mp
from pathlib import Path

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext

from orchestrator.catalog.db import CatalogError
from orchestrator.catalog.models import Base
from orchestrator.catalog.repository import Catalog, NotFoundError


def _job(cat: Catalog, name: str = "j1") -> None:
    cat.create_job(name, {"name": name}, world_size=4, steps_total=10, run_dir="/tmp/x", ray_address=None)


def test_migrations_match_models(catalog_url: str) -> None:
    cat = Catalog(catalog_url)
    with cat.engine.connect() as conn:
        diff = compare_metadata(MigrationContext.configure(conn, opts={"compare_type": True}), Base.metadata)
    assert diff == []


def test_a_catalog_at_the_first_revision_upgrades_with_its_rows_intact(catalog_url: str) -> None:
    from alembic import command
    from sqlalchemy import text

    from orchestrator.catalog.db import _alembic_config, make_engine

    engine = make_engine(catalog_url)
    cfg = _alembic_config()
    with engine.begin() as conn:
        cfg.attributes["connection"] = conn
        command.upgrade(cfg, "0001")
    with engine.begin() as conn:
        conn.execute(text("INSERT INTO jobs (name, state, spec, world_size, steps_total, submitted_at, updated_at, "
                          "current_attempt, last_step, run_dir) VALUES ('old', 'succeeded', '{}', 4, 10, "
                          "CURRENT_TIMESTAMP, CURRENT_TIMESTAMP, 1, 10, '/runs/old')"))
        conn.execute(text("INSERT INTO attempts (job_name, number, state, started_at, start_step, layout) "
                          "VALUES ('old', 1, 'succeeded', CURRENT_TIMESTAMP, 0, '{\"dp\": 4}')"))
        conn.execute(text("INSERT INTO interruptions (job_name, attempt, planned, category, component, confidence, "
                          "kind, ranks, hosts, gpus, evidence, time_lost, status, notes, classification_history) "
                          "VALUES ('old', 1, false, 'faulty_gpu', 'gpu', 0.9, 'crash', '[2]', '[\"h1\"]', '[]', "
                          "'{}', '{}', 'open', '[]', '[]')"))
    engine.dispose()
    cat = Catalog(catalog_url)  # upgrades to head on open
    job = cat.require_job("old")
    assert (job.state, job.last_step, job.ray_embedded) == ("succeeded", 10, False)
    assert [(a.number, a.layout) for a in job.attempts] == [(1, {"dp": 4})]
    [i] = cat.interruptions("old")
    assert (i.category, i.ranks, i.hosts) == ("faulty_gpu", [2], ["h1"])


def test_job_attempts_ranks_round_trip(catalog_url: str) -> None:
    cat = Catalog(catalog_url)
    _job(cat)
    aid = cat.start_attempt("j1", 1, 0, {"dp": 4})
    for r in range(4):
        cat.upsert_rank(aid, r, host=f"h{r % 2}", pid=100 + r, state="running")
    cat.upsert_rank(aid, 2, state="failed", exit_code=-9, signal="SIGKILL")
    job = cat.require_job("j1")
    assert job.current_attempt == 1
    ranks = job.attempts[0].ranks
    assert [r.rank for r in ranks] == [0, 1, 2, 3]
    assert ranks[2].signal == "SIGKILL" and ranks[2].pid == 102
    cat.close_open_ranks(aid, "stopped")
    states = [r.state for r in cat.require_job("j1").attempts[0].ranks]
    assert states == ["stopped", "stopped", "failed", "stopped"]


def test_hosts_cordon_history(catalog_url: str) -> None:
    cat = Catalog(catalog_url)
    cat.see_host("node-a", "n1", "10.0.0.1")
    cat.set_host_state("node-a", "cordoned", reason="xid 79", actor="controller")
    cat.set_host_state("node-a", "healthy", reason="repaired", actor="alice")
    host = cat.get_host("node-a")
    assert [(e.from_state, e.to_state) for e in host.events] == [("healthy", "cordoned"),
                                                                   ("cordoned", "healthy")]
    assert cat.cordoned_hosts() == set()
    with pytest.raises(NotFoundError):
        cat.set_host_state("ghost", "cordoned", reason=None, actor=None)


def test_delete_job_cascades(catalog_url: str) -> None:
    cat = Catalog(catalog_url)
    _job(cat)
    aid = cat.start_attempt("j1", 1, 0, {})
    cat.upsert_rank(aid, 0, state="running")
    cat.record_checkpoint("j1", 5, "/p", 1, 0.01, 0.2)
    cat.record_interruption(job_name="j1", attempt=1, category="unknown", component="unknown", kind="crash")
    cat.delete_job("j1")
    assert cat.get_job("j1") is None
    assert cat.interruptions("j1") == []


def test_unreachable_postgres_is_one_clear_error() -> None:
    with pytest.raises(CatalogError, match="cannot reach database postgresql"):
        Catalog("postgresql://nobody:secret@127.0.0.1:1/none")


def test_bad_url() -> None:
    with pytest.raises(CatalogError, match="not a valid"):
        Catalog("not a url")


def _writer(url: str, n: int) -> None:
    cat = Catalog(url)
    for i in range(n):
        cat.update_job("j1", last_step=i)


def test_sqlite_reader_while_writer_runs(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'c.db'}"
    cat = Catalog(url)
    _job(cat)
    p = mp.get_context("spawn").Process(target=_writer, args=(url, 300))
    p.start()
    reads = 0
    while p.is_alive():
        assert cat.require_job("j1").last_step >= 0
        reads += 1
    p.join()
    assert p.exitcode == 0
    assert cat.require_job("j1").last_step == 299
    assert reads > 0


def test_updates_refuse_unknown_fields(tmp_path: Path) -> None:
    cat = Catalog(f"sqlite:///{tmp_path / 'c.db'}")
    _job(cat)
    aid = cat.start_attempt("j1", 1, 0, {})
    iid = cat.record_interruption(job_name="j1", attempt=1, category="unknown", component="unknown", kind="crash")
    calls = {
        "Job": lambda: cat.update_job("j1", last_stpe=3),
        "Attempt": lambda: cat.update_attempt(aid, end_stpe=3),
        "RankRecord": lambda: cat.upsert_rank(aid, 0, state="running", exitcode=1),
        "Interruption": lambda: cat.update_interruption(iid, stauts="resolved"),
    }
    for model, call in calls.items():
        with pytest.raises(ValueError, match=rf"^{model} has no field '(last_stpe|end_stpe|exitcode|stauts)'"):
            call()
    job = cat.require_job("j1")
    assert job.last_step == 0 and job.attempts[0].ranks == [], "a refused update wrote something"
    cat.update_job("j1", last_step=3)
    assert cat.require_job("j1").last_step == 3


def test_failed_checkpoint_save_is_a_non_interrupting_incident(tmp_path: Path) -> None:
    cat = Catalog(f"sqlite:///{tmp_path / 'c.db'}")
    _job(cat)
    cat.record_checkpoint_failure("j1", 2, step=8, error="rank 0: [Errno 28] No space left on device", failures=1,
                                  consecutive=1, host="h0")
    (i,) = cat.interruptions("j1")
    assert (i.kind, i.attempt, i.step_at_fault, i.steps_lost, i.hosts) == ("checkpoint_failed", 2, 8, 0, ["h0"])
    assert "No space left on device" in i.explanation and i.evidence["step"] == 8


def test_a_repaired_host_starts_a_clean_hardware_record(tmp_path: Path) -> None:
    from datetime import UTC, datetime, timedelta

    from orchestrator.hosts import lemon_hosts

    cat = Catalog(f"sqlite:///{tmp_path / 'c.db'}")
    _job(cat)
    old = datetime.now(UTC) - timedelta(days=2)
    for _ in range(2):
        cat.record_interruption(job_name="j1", attempt=1, planned=False, category="faulty_gpu", component="gpu",
                                confidence=0.9, kind="crash", hosts=["h1"], detected_at=old)
    assert lemon_hosts(cat).lemons == {"h1"}
    cat.set_host_state("h1", "repaired", reason="GPU swapped", actor="oncall", create=True)
    assert lemon_hosts(cat).counts.get("h1", 0) == 0 and lemon_hosts(cat).lemons == set()
