"""Every dashboard panel and every alert, run through a real Prometheus that scraped a real job with a fault.

One job on the embedded Ray (2 ranks) exports on a fixed loopback port
(`submit --metrics-port`); Debian's Prometheus scrapes it every second with
the committed alert rules loaded. A rank is SIGKILLed with `kill -9` of its
trainer process mid-run; the job recovers and finishes. Then each panel query of the
committed dashboards/reliability.json and each alert expression of
dashboards/alerts.yml goes through Prometheus' HTTP API.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import time
import urllib.parse
import urllib.request
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
import yaml

from orchestrator.catalog.repository import Catalog
from orchestrator.dashboards.reliability import panel_queries
from tests.cli import metrics_rows, orch, orch_json, start_submit, wait_for
from tests.conftest import REPO, small_job, write_job
from tests.services import prometheus_server
from trainer.ports import free_port

pytestmark = [pytest.mark.slow, pytest.mark.timeout(600),
              pytest.mark.skipif(shutil.which("prometheus") is None, reason="prometheus missing")]
NAME = "prom-e2e"
STEPS = 60
EVENT_ONLY = {"orchestrator_straggler_score"}
"""Series that exist only once their event happened: no straggler is injected here."""


def api(base: str, path: str, **params: Any) -> Any:
    url = f"{base}/api/v1/{path}?{urllib.parse.urlencode(params)}"
    body = json.loads(urllib.request.urlopen(url, timeout=30).read())
    assert body["status"] == "success", body
    return body["data"]


def query_range(base: str, expr: str, start: float, end: float) -> list[dict[str, Any]]:
    return api(base, "query_range", query=expr, start=start, end=end, step="1s")["result"]


def test_dashboard_and_alerts_against_real_prometheus(tmp_path: Path, cli_env: dict[str, str],
                                                      state_dir: Path) -> None:
    port = free_port()
    rules = REPO / "dashboards" / "alerts.yml"
    job = write_job(tmp_path / "job.yaml", small_job(NAME, dp=2, steps=STEPS, interval=5,
                                                      reliability={"hang_timeout_s": 60, "max_restarts": 3}))
    with prometheus_server([f"127.0.0.1:{port}"], [str(rules)]) as prom:
        start = time.time()
        proc = start_submit(job, cli_env, "--metrics-port", str(port), log=tmp_path / "submit.log")
        run_dir = state_dir / "runs" / NAME
        try:
            wait_for(lambda: any(x["step"] >= 10 for x in metrics_rows(run_dir)), 240, "step 10")
            # SIGKILL the rank's trainer process (what `chaos kill` does, without its CLI start-up latency).
            cat = Catalog(f"sqlite:///{state_dir / 'catalog.db'}")
            [pid] = [r.pid for r in cat.live_ranks(NAME) if r.rank == 1]
            os.kill(pid, signal.SIGKILL)
            st = orch_json(["status", NAME], cli_env)
            assert st["metrics_url"] == f"http://127.0.0.1:{port}/metrics"
            assert proc.wait(timeout=400) == 0, (tmp_path / "submit.log").read_text()[-3000:]
        finally:
            if proc.poll() is None:
                proc.kill()
        end = time.time()
        unplanned = [i for i in cat.interruptions(NAME) if i.kind != "straggler" and not i.planned]
        assert any(i.kind == "crash" and i.ranks == [1] for i in unplanned)

        up = query_range(prom, 'up{job="orchestrator"}', start, end)
        assert any(float(v) == 1 for s in up for _, v in s["values"]), "Prometheus never scraped the exporter"

        # Every panel returns data; every query of every panel evaluates.
        dashboard = json.loads((REPO / "dashboards" / "reliability.json").read_text())
        empty = []
        for title, exprs in panel_queries(dashboard):
            got = {e: query_range(prom, e.replace("$job", NAME), start, end) for e in exprs}
            assert any(got.values()), f"panel {title!r}: no query returned data: {exprs}"
            empty += [e for e, res in got.items() if not res and not any(m in e for m in EVENT_ONLY)]
        assert not empty, f"queries without data: {empty}"

        # The fault shows up under its category in the Table 5 panel's query, as the catalog has it.
        [table5] = [es[0] for t, es in panel_queries(dashboard) if "Table 5" in t]
        rows = query_range(prom, table5.replace("$job", NAME), start, end)
        last = {(s["metric"]["category"], s["metric"]["component"]): float(s["values"][-1][1]) for s in rows}
        assert last == dict(Counter((i.category, i.component) for i in unplanned))
        lat = query_range(prom, f'orchestrator_detection_seconds_count{{job="{NAME}"}}', start, end)
        assert float(lat[0]["values"][-1][1]) == len(unplanned)

        # Every alert expression evaluates, and Prometheus itself loaded and ran every rule.
        groups = yaml.safe_load(rules.read_text())["groups"]
        for rule in (r for g in groups for r in g["rules"]):
            query_range(prom, rule["expr"], start, end)
        loaded = [r for g in api(prom, "rules")["groups"] for r in g["rules"]]
        assert len(loaded) == sum(len(g["rules"]) for g in groups)
        assert all(r["health"] == "ok" for r in loaded), [(r["name"], r.get("lastError")) for r in loaded]

    # The HTML report carries the dashboard's panels, drawn from the same catalog and metrics.
    html = tmp_path / "report.html"
    r = orch(["report", NAME, "--html", str(html)], cli_env)
    assert r.returncode == 0, r.stderr
    text = html.read_text()
    for alt in ("time lost by cause", "interruptions by category", "detection and restart latency",
                "checkpoint durations", "tokens per second"):
        assert f"alt='{alt}'" in text, alt
