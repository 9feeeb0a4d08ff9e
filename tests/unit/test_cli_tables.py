"""The on-call tables at 80 columns: nothing wider, no identifier cut; --wide and --json whole."""

from __future__ import annotations

import json
import re
from collections import Counter
from datetime import datetime, timedelta
from pathlib import Path

import pytest
from typer.testing import CliRunner

from orchestrator.cli.common import fmt_when
from orchestrator.cli.main import app
from orchestrator.cli.tables import Col, render
from tests.cli_catalog import HOSTS, JOBS, fill

TIME_FORMS = re.compile(r"^(\d+s ago|\d+m ago|\d\d:\d\d:\d\d|\d\d-\d\d \d\d:\d\d|\d{4}-\d\d-\d\d)$")


@pytest.fixture(scope="module")
def state(tmp_path_factory: pytest.TempPathFactory) -> Path:
    d = tmp_path_factory.mktemp("cli-tables") / "state"
    fill(f"sqlite:///{d / 'catalog.db'}", d / "runs")
    return d


def _out(state: Path, *args: str, columns: int = 80) -> list[str]:
    r = CliRunner().invoke(app, list(args), env={"ORCHESTRATOR_HOME": str(state), "COLUMNS": str(columns),
                                                 "ORCHESTRATOR_DB": ""})
    assert r.exit_code == 0, r.output
    assert not r.stderr
    return r.stdout.splitlines()


def _incidents(state: Path) -> list[dict]:
    r = CliRunner().invoke(app, ["incidents", "list", "--json"], env={"ORCHESTRATOR_HOME": str(state)})
    return json.loads(r.stdout)


def _words(lines: list[str]) -> Counter[str]:
    return Counter(w.strip(",") for ln in lines for w in ln.split())


def _fits(lines: list[str]) -> None:
    too_wide = [ln for ln in lines if len(ln) > 80]
    assert not too_wide, "\n".join(too_wide)
    assert not [ln for ln in lines if "…" in ln]


def test_incidents_list_at_80_columns(state: Path) -> None:
    lines = _out(state, "incidents", "list")
    _fits(lines)
    words = _words(lines)
    rows = _incidents(state)
    for field in ("category", "kind", "job", "status"):
        want = Counter(r[field] for r in rows)
        for value, n in want.items():
            assert words[value] >= n, f"{field} {value!r}: {words[value]} whole, want {n}\n" + "\n".join(lines)
    hosts = Counter(h for r in rows for h in r["hosts"])
    for h, n in hosts.items():
        assert words[h] == n, f"host {h}: {words[h]} whole, want {n}"
    # One short time per incident, each in one of the forms on-call reads at a glance.
    times = [m.group(0) for ln in lines for m in re.finditer(
        r"\d+[sm] ago|(?<![\d-])\d\d:\d\d:\d\d|\d\d-\d\d \d\d:\d\d|\d{4}-\d\d-\d\d", ln)]
    assert len(times) == len(rows) and all(TIME_FORMS.match(t) for t in times), times


def test_hosts_jobs_status_report_at_80_columns(state: Path) -> None:
    hosts = _out(state, "hosts", "list")
    _fits(hosts)
    assert all(_words(hosts)[h] == 1 for h in HOSTS)
    assert "cordoned" in _words(hosts) and "suspect" in _words(hosts)
    jobs = _out(state, "jobs")
    _fits(jobs)
    assert all(_words(jobs)[j] == 1 for j in JOBS)
    assert "12345/100000" in _words(jobs)
    for job in JOBS:
        status = _out(state, "status", job)
        _fits(status)
        assert "SIGKILL" in _words(status)
        if JOBS[job][1]:
            assert JOBS[job][1] in " ".join(" ".join(status).split()), "the reason is shown as written"
        assert sum(_words(status)[h] for h in HOSTS) == 16 * (list(JOBS).index(job) + 1)
    show = _out(state, "incidents", "show", "3")
    _fits(show)
    assert all(_words(show)[h] == 1 for h in _incidents(state)[2]["hosts"])
    report = _out(state, "report")
    _fits(report)
    r = CliRunner().invoke(app, ["report", "--json"], env={"ORCHESTRATOR_HOME": str(state)})
    table5 = json.loads(r.stdout)["overall"]["table5"]["categories"]
    assert len(table5) > 10 and "gpu_thermal_interface_sensor" in {c["category"] for c in table5}
    for c in table5:
        assert _words(report)[c["category"]] >= 1 and _words(report)[c["component"]] >= 1


def test_wide_keeps_every_field_on_one_line(state: Path) -> None:
    lines = _out(state, "incidents", "list", "--wide")
    rows = _incidents(state)
    assert len(lines) == 1 + len(rows)
    for r, ln in zip(rows, lines[1:], strict=True):
        assert r["category"] in ln and r["component"] in ln and all(h in ln for h in r["hosts"])
        assert " ".join(r["explanation"].split()) in ln
        assert re.search(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d", ln)
    jobs = _out(state, "jobs", "--wide")
    assert any(JOBS["mixtral-sft-long-context"][1] in ln for ln in jobs)


def test_json_is_unchanged(state: Path) -> None:
    rows = _incidents(state)
    assert set(rows[0]) == {
        "id", "job", "attempt", "kind", "planned", "category", "component", "confidence", "explanation", "ranks",
        "hosts", "gpus", "status", "fault_at", "detected_at", "stopped_at", "resumed_at", "step_at_fault",
        "resume_step", "steps_lost"}
    assert datetime.fromisoformat(rows[0]["detected_at"]).tzinfo is not None


def test_renderer_never_cuts_an_identifier() -> None:
    long_host = "a-very-long-host-name-0123456789.rack-17.datacenter.example.internal"
    rows = [{"id": "7", "host": long_host, "why": "words " * 30}]
    layouts = [[Col("id", lambda r: r["id"]), Col("host", lambda r: r["host"]), Col("why", lambda r: r["why"],
                                                                                   wrap=True)],
               [Col("id", lambda r: r["id"]), Col("host", lambda r: r["host"], spill=True),
                Col("why", lambda r: r["why"], wrap=True)]]
    head, body = render(layouts, rows, 40)
    assert head == ["id  why"]
    assert f"  host: {long_host}" in body, body
    assert all(len(ln) <= 40 for ln in body if long_host not in ln)
    assert " ".join(body[:-1]).split() == ["7", *["words"] * 30]


def test_short_times() -> None:
    now = datetime(2026, 11, 29, 12, 0, 0).astimezone()
    assert fmt_when(now - timedelta(seconds=20), now) == "20s ago"
    assert fmt_when(now - timedelta(minutes=3, seconds=5), now) == "3m ago"
    assert fmt_when(now - timedelta(hours=5), now) == "07:00:00"
    assert fmt_when(now - timedelta(days=2), now) == "11-27 12:00"
    assert fmt_when(now - timedelta(days=400), now) == "2025-10-25"
    assert fmt_when(None, now) == "-"


def test_status_says_what_a_restart_would_resume_from(tmp_path: Path) -> None:
    from orchestrator.catalog.repository import Catalog

    cat = Catalog(f"sqlite:///{tmp_path / 'catalog.db'}")
    cat.create_job("snapjob", {"name": "snapjob"}, world_size=2, steps_total=100, run_dir=str(tmp_path / "r"),
                   ray_address=None)
    cat.start_attempt("snapjob", 1, 0, {"dp": 2, "checkpoint_interval_steps": 37, "snapshot_interval_steps": 3,
                                        "snapshot_step": 40,
                                        "resumed_from": {"kind": "snapshot", "step": 30, "path": "/dev/shm/x"}})
    r = CliRunner().invoke(app, ["status", "snapjob"], env={"ORCHESTRATOR_HOME": str(tmp_path), "COLUMNS": "80"})
    assert r.exit_code == 0, r.output
    text = " ".join(r.stdout.split())
    assert "checkpoint every 37 steps (auto)" in text and "snapshot held by every rank: step 40" in text
    assert "snapshot every 3 steps (auto)" in text
    assert "resumed from snapshot at step 30" in text
    j = json.loads(CliRunner().invoke(app, ["status", "snapjob", "--json"],
                                      env={"ORCHESTRATOR_HOME": str(tmp_path)}).stdout)
    assert (j["checkpoint_interval_steps"], j["snapshot_step"], j["resumed_from"]["step"]) == (37, 40, 30)
    assert j["snapshot_interval_steps"] == 3
