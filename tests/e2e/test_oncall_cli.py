"""The on-call CLI against a catalog filled by a real run with an injected fault, on SQLite and PostgreSQL."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from tests.cli import metrics_rows, orch, orch_json, slow_down, start_submit, wait_for
from tests.conftest import small_job, write_job

pytestmark = [pytest.mark.slow, pytest.mark.timeout(600)]
STEPS = 80


def _filled_catalog(tmp_path: Path, env: dict[str, str], state_dir: Path, db: list[str]) -> None:
    job = write_job(tmp_path / "job.yaml", small_job("oncall", dp=2, steps=STEPS, interval=5))
    log = tmp_path / "submit.log"
    proc = start_submit(job, env, *db, log=log)
    try:
        run_dir = state_dir / "runs" / "oncall"
        wait_for(lambda: metrics_rows(run_dir), 240, "the first step")
        slow_down(run_dir, ranks=2, delay_s=0.2)  # the kill must land before the job ends, however loaded the machine
        wait_for(lambda: any(x["step"] >= 10 for x in metrics_rows(run_dir)), 240, "step 10")
        r = orch(["chaos", "kill", "oncall", "--rank", "1", *db], env)
        assert r.returncode == 0, r.stderr
        assert proc.wait(timeout=300) == 0, log.read_text()[-3000:]
    finally:
        if proc.poll() is None:
            proc.kill()


def _screenshot(html: Path, png: Path) -> None:
    subprocess.run(["chromium", "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                    "--disable-background-networking", "--disable-component-update", "--disable-sync",
                    f"--user-data-dir={png.parent / 'chrome-profile'}", f"--screenshot={png}",
                    "--window-size=1200,2400", f"file://{html}"], capture_output=True, timeout=120, check=False)


def check_oncall_cli(env: dict[str, str], db: list[str], job_name: str, rank: int, steps: int,
                     tmp_path: Path | None = None) -> None:
    """Drive the on-call CLI over a catalog that holds one job with one SIGKILLed rank.

    With `tmp_path`, also render the HTML report in headless Chromium.
    """
    incidents = orch_json(["incidents", "list", *db], env)
    assert len(incidents) == 1
    inc = incidents[0]
    assert inc["kind"] == "crash" and inc["ranks"] == [rank] and inc["status"] == "open"
    assert inc["category"] == "unknown"  # a SIGKILL from outside leaves no signature
    iid = str(inc["id"])
    assert orch(["incidents", "ack", iid, "--by", "alice", "--note", "looking", *db], env).returncode == 0
    assert orch(["incidents", "reclassify", iid, "host_maintenance", "--by", "alice", *db], env).returncode == 0
    assert orch(["incidents", "resolve", iid, "--by", "bob", *db], env).returncode == 0
    shown = orch_json(["incidents", "show", iid, *db], env)
    assert shown["category"] == "host_maintenance" and shown["component"] == "unplanned_maintenance"
    assert shown["classification_history"][0]["from"] == "unknown"
    assert shown["status"] == "resolved" and shown["acknowledged_by"] == "alice" and shown["resolved_by"] == "bob"
    assert orch_json(["incidents", "list", "--open", *db], env) == []
    assert len(orch_json(["incidents", "list", "--category", "host_maintenance", "--since", "1h", *db], env)) == 1

    hosts = orch_json(["hosts", "list", *db], env)
    host = hosts[0]["host"]
    assert orch(["hosts", "cordon", host, "--reason", "xid 79", *db], env).returncode == 0
    assert orch_json(["hosts", "list", *db], env)[0]["state"] == "cordoned"
    assert orch(["hosts", "uncordon", host, *db], env).returncode == 0
    assert orch_json(["hosts", "list", *db], env)[0]["state"] == "repaired"

    rep = orch_json(["report", job_name, *db], env)
    job = rep["per_job"][0]
    assert 0 < job["ettr"] < 1
    # A restart's preflight is its own cause: when it fills the whole restart, "restart" itself is 0.
    lost = job["time_lost_seconds"]
    assert lost["restart"] + lost["preflight"] > 0 and job["steps_completed"] == steps
    assert rep["overall"]["table5"]["categories"][0]["category"] == "host_maintenance"

    # Bad input: one line, non-zero.
    for args, code in ((["incidents", "show", "999"], 2), (["hosts", "cordon", "no-such-host"], 2),
                       (["incidents", "reclassify", iid, "gremlins"], 2)):
        r = orch([*args, *db], env)
        assert r.returncode == code, (args, r.stderr)
        assert len(r.stderr.strip().splitlines()) == 1 and "Traceback" not in r.stderr

    if tmp_path is not None:
        html = tmp_path / "report.html"
        assert orch(["report", "--html", str(html), *db], env).returncode == 0
        text = html.read_text()
        # The ETTR and time-lost plots, then the dashboard's panels drawn from the same data.
        assert text.count("data:image/png;base64,") >= 3
        png = tmp_path / "report.png"
        _screenshot(html, png)
        assert png.exists() and png.stat().st_size > 20_000, "chromium did not render the report"


def test_oncall_cli_on_postgresql(tmp_path: Path, cli_env: dict[str, str], state_dir: Path,
                                  postgres_admin_url: str) -> None:
    """The on-call CLI over a PostgreSQL catalog (every other e2e test reads SQLite), its HTML report in Chromium."""
    from tests.services import create_database

    db = ["--db", create_database(postgres_admin_url, "oncall_e2e")]
    _filled_catalog(tmp_path, cli_env, state_dir, db)
    check_oncall_cli(cli_env, db, "oncall", rank=1, steps=STEPS, tmp_path=tmp_path)


def test_unreachable_database_is_one_line(cli_env: dict[str, str]) -> None:
    for args in (["incidents", "list"], ["hosts", "list"], ["report"]):
        r = orch([*args, "--db", "postgresql://x:y@127.0.0.1:1/none"], cli_env)
        assert r.returncode == 1 and "cannot reach database" in r.stderr, r.stderr
        assert len(r.stderr.strip().splitlines()) == 1


def test_classify_offline(tmp_path: Path, cli_env: dict[str, str]) -> None:
    f = tmp_path / "x.log"
    f.write_text("kernel: NVRM: Xid (PCI:0000:3b:00): 79, pid=0, GPU has fallen off the bus.\n")
    out = json.loads(orch(["incidents", "classify", str(f), "--json"], cli_env).stdout)
    assert out == [{**out[0], "file": str(f), "category": "faulty_gpu", "component": "gpu"}]
    assert out[0]["confidence"] > 0.9
    r = orch(["incidents", "classify", str(tmp_path / "missing.log"), "--json"], cli_env)
    assert r.returncode == 2 and "cannot read" in r.stderr
