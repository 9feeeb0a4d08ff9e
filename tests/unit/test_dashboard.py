"""The dashboard as code: the committed JSON is what the code generates; `push` speaks Grafana's HTTP API.

No Grafana server can be installed here, so `push` is checked against a small
loopback HTTP server that accepts only the request Grafana documents for
creating or updating a dashboard: POST /api/dashboards/db, `Authorization:
Bearer <token>`, a JSON body with `dashboard` (carrying our uid) and `overwrite`.
"""

from __future__ import annotations

import json
import socket
import threading
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path

import pytest
from typer.testing import CliRunner

from orchestrator.cli.main import app
from orchestrator.dashboards.reliability import build, panel_queries, render

ROOT = Path(__file__).resolve().parents[2]
COMMITTED = ROOT / "dashboards" / "reliability.json"


def test_committed_dashboard_is_what_the_code_generates() -> None:
    assert COMMITTED.read_text() == render(), (
        "dashboards/reliability.json is stale: run `orchestrator dashboard export -o dashboards/reliability.json`")


def test_dashboard_has_the_job_variable_and_every_view() -> None:
    d = json.loads(COMMITTED.read_text())
    assert "job" in [v["name"] for v in d["templating"]["list"]]
    exprs = " ".join(e for _, es in panel_queries(d) for e in es)
    for metric in ("orchestrator_ettr_ratio", "orchestrator_ettr_target_ratio", "orchestrator_time_lost_seconds_total",
                   "orchestrator_interruptions_total", "orchestrator_detection_seconds_bucket",
                   "orchestrator_restart_seconds_bucket", "orchestrator_checkpoint_seconds_bucket",
                   "orchestrator_hosts", "orchestrator_rank_step_seconds", "orchestrator_tokens_per_second"):
        assert metric in exprs, metric
    for _, es in panel_queries(d):
        assert es and all('job=~"$job"' in e for e in es)


def test_export_writes_the_file(tmp_path: Path) -> None:
    out = tmp_path / "d.json"
    r = CliRunner().invoke(app, ["dashboard", "export", "--output", str(out)])
    assert r.exit_code == 0, r.output
    assert json.loads(out.read_text())["uid"] == "orchestrator-reliability"


class FakeGrafana(BaseHTTPRequestHandler):
    status = 200
    seen: list[dict] = []

    def do_POST(self) -> None:  # noqa: N802 - the http.server name
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        FakeGrafana.seen.append({"path": self.path, "auth": self.headers.get("Authorization"), "body": body,
                                 "type": self.headers.get("Content-Type")})
        ok = (self.path == "/api/dashboards/db" and self.headers.get("Authorization") == "Bearer tok-123"
              and isinstance(body.get("dashboard"), dict) and body["dashboard"].get("uid") == "orchestrator-reliability"
              and body.get("overwrite") is True)
        code, out = (FakeGrafana.status, {"status": "success", "uid": "orchestrator-reliability",
                                          "url": "/d/orchestrator-reliability/training-reliability", "version": 1})
        if not ok:
            code, out = 400, {"message": "bad request"}
        elif code != 200:
            out = {"message": "Invalid API key"}
        data = json.dumps(out).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *a: object) -> None:
        pass


@pytest.fixture
def grafana():
    FakeGrafana.seen, FakeGrafana.status = [], 200
    srv = HTTPServer(("127.0.0.1", 0), FakeGrafana)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{srv.server_address[1]}"
    srv.shutdown()
    srv.server_close()


def test_push_sends_what_grafana_documents(grafana: str) -> None:
    r = CliRunner().invoke(app, ["dashboard", "push", "--url", grafana], env={"GRAFANA_TOKEN": "tok-123"})
    assert r.exit_code == 0, r.output
    [req] = FakeGrafana.seen
    assert req["path"] == "/api/dashboards/db" and req["auth"] == "Bearer tok-123"
    assert req["type"].startswith("application/json")
    assert req["body"]["overwrite"] is True and req["body"]["dashboard"] == build()


def test_push_refused_is_one_line_and_exit_1(grafana: str) -> None:
    FakeGrafana.status = 401
    r = CliRunner().invoke(app, ["dashboard", "push", "--url", grafana], env={"GRAFANA_TOKEN": "tok-123"})
    assert r.exit_code == 1
    assert "refused" in r.output and "401" in r.output and "Traceback" not in r.output
    assert len(r.output.strip().splitlines()) == 1


def test_push_unreachable_and_no_token() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # closed again: nothing listens there
    r = CliRunner().invoke(app, ["dashboard", "push", "--url", f"http://127.0.0.1:{port}", "--timeout", "2"],
                           env={"GRAFANA_TOKEN": "tok-123"})
    assert r.exit_code == 1 and "cannot reach Grafana" in r.output, r.output
    assert len(r.output.strip().splitlines()) == 1
    r = CliRunner().invoke(app, ["dashboard", "push", "--url", "http://127.0.0.1:1"], env={"GRAFANA_TOKEN": ""})
    assert r.exit_code == 2 and "GRAFANA_TOKEN" in r.output
