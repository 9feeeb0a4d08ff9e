"""Schema upgrades: only `db upgrade` and `submit` migrate, under a lock; `status` reads summaries."""

from __future__ import annotations

import multiprocessing as mp
from pathlib import Path

import pytest
from sqlalchemy import event, text
from typer.testing import CliRunner

from orchestrator.catalog.repository import Catalog
from orchestrator.cli.main import app


def _open(url: str, go: mp.synchronize.Event, out: mp.Queue) -> None:  # type: ignore[name-defined]
    go.wait()
    try:
        Catalog(url).close()
        out.put("ok")
    except Exception as e:  # the test reports whatever went wrong
        out.put(f"{type(e).__name__}: {e}")


def test_two_clients_open_a_new_catalog_at_once(catalog_url: str) -> None:
    ctx = mp.get_context("fork")
    go, out = ctx.Event(), ctx.Queue()
    procs = [ctx.Process(target=_open, args=(catalog_url, go, out)) for _ in range(2)]
    for p in procs:
        p.start()
    go.set()
    results = sorted(out.get(timeout=60) for _ in procs)
    for p in procs:
        p.join(30)
    assert results == ["ok", "ok"], results
    cat = Catalog(catalog_url, migrate=False)  # at the newest revision: opens without migrating
    with cat.engine.connect() as conn:
        assert conn.execute(text("SELECT count(*) FROM alembic_version")).scalar() == 1
    assert cat.list_jobs() == []


def _catalog_at(url: str, revision: str) -> None:
    from alembic import command

    from orchestrator.catalog.db import _alembic_config, make_engine

    engine = make_engine(url)
    cfg = _alembic_config()
    with engine.begin() as conn:
        cfg.attributes["connection"] = conn
        command.upgrade(cfg, revision)
    engine.dispose()


def _revision(url: str) -> str:
    from orchestrator.catalog.db import current_revision, make_engine

    engine = make_engine(url)
    try:
        rev = current_revision(engine)
    finally:
        engine.dispose()
    assert rev is not None
    return rev


READ_ONLY = [["status"], ["status", "tiny"], ["jobs"], ["incidents", "list"], ["incidents", "show", "1"],
             ["hosts", "list"], ["report"]]


def test_read_only_commands_refuse_an_old_schema_and_db_upgrade_migrates(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'catalog.db'}"
    _catalog_at(url, "0002")
    env = {"ORCHESTRATOR_HOME": str(tmp_path), "ORCHESTRATOR_DB": url, "RAY_ADDRESS": "", "COLUMNS": "200"}
    runner = CliRunner()
    for args in READ_ONLY:
        r = runner.invoke(app, args, env=env)
        lines = [ln for ln in (r.stdout + r.stderr).splitlines() if ln.strip()]
        assert r.exit_code == 1 and len(lines) == 1, (args, r.exit_code, lines)
        assert "is at revision 0002, this version needs 0004: run `orchestrator db upgrade`" in lines[0], lines
    assert _revision(url) == "0002", "a read-only command migrated the catalog"
    r = runner.invoke(app, ["db", "upgrade"], env=env)
    assert r.exit_code == 0 and "upgraded" in r.stdout, r.stdout + r.stderr
    assert _revision(url) == "0004"
    r = runner.invoke(app, ["db", "upgrade"], env=env)
    assert r.exit_code == 0 and "already at revision 0004" in r.stdout
    r = runner.invoke(app, ["jobs", "--json"], env=env)
    assert r.exit_code == 0 and r.stdout.strip() == "[]", r.stdout + r.stderr


def test_status_reads_only_the_current_attempts_ranks(tmp_path: Path) -> None:
    cat = Catalog(f"sqlite:///{tmp_path / 'catalog.db'}")
    cat.create_job("long", {"name": "long"}, world_size=8, steps_total=10, run_dir="/tmp/x", ray_address=None)
    for n in range(1, 41):
        aid = cat.start_attempt("long", n, 0, {"dp": 8, "spares": ["h9"] if n == 40 else []})
        for r in range(8):
            cat.upsert_rank(aid, r, host=f"h{r}", state="running" if n == 40 else "failed", step=n)
    statements: list[str] = []
    event.listen(cat.engine, "before_cursor_execute", lambda *a: statements.append(a[2]))
    st = cat.job_status("long")
    assert st is not None and st.job.current_attempt == 40
    assert [a.number for a in st.attempts] == list(range(1, 41))
    assert [(r.rank, r.step, r.state) for r in st.current_ranks] == [(r, 40, "running") for r in range(8)]
    rank_reads = [s for s in statements if "FROM ranks" in s]
    assert len(statements) <= 3 and len(rank_reads) == 1, statements
    statements.clear()
    row = cat.job_row("long")
    assert row is not None and row.current_attempt == 40
    assert len(statements) == 1 and "ranks" not in statements[0] and "attempts" not in statements[0], statements


@pytest.mark.parametrize("args", [["jobs"], ["status", "nope"]])
def test_read_only_commands_do_not_create_a_schema(tmp_path: Path, args: list[str]) -> None:
    """An empty database (PostgreSQL created by hand, say) stays empty under read-only commands."""
    url = f"sqlite:///{tmp_path / 'catalog.db'}"
    (tmp_path / "catalog.db").touch()
    r = CliRunner().invoke(app, args, env={"ORCHESTRATOR_HOME": str(tmp_path), "ORCHESTRATOR_DB": url,
                                           "RAY_ADDRESS": ""})
    assert r.exit_code == 1 and "revision none" in r.stderr and "orchestrator db upgrade" in r.stderr, r.stderr
    from orchestrator.catalog.db import current_revision, make_engine

    assert current_revision(make_engine(url)) is None
