"""The metrics exporter as a controller callback: scraped over HTTP after a controller run with a fault.

The controller is stepped with the fakes of test_controller (a real SQLite
catalog); the exporter serves on a loopback port and is read back with
prometheus_client's own parser, as Prometheus would read it.
"""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from datetime import UTC, datetime
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from orchestrator.catalog.repository import Catalog
from orchestrator.controller.callbacks import CallbackList, ControllerCallback
from orchestrator.controller.catalog_writer import CatalogWriter
from orchestrator.controller.controller import Controller
from orchestrator.controller.state import ControllerState as S
from orchestrator.metrics.exporter import MetricsExporter
from orchestrator.metrics.ranks import summarize
from orchestrator.spec import JobSpec
from tests.conftest import small_job
from tests.controller_fakes import FakeCheckpoints, FakeClock, FakeSpares, FakeWorkerGroup, Fault
from tests.unit.test_controller import XID79


def scrape(url: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    text = urllib.request.urlopen(url, timeout=5).read().decode()
    out = {}
    for fam in text_string_to_metric_families(text):
        for s in fam.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def value(samples: dict, name: str, **labels: str) -> float | None:
    want = {"job": "job", **labels}
    hits = [v for (n, ls), v in samples.items() if n == name and all(dict(ls).get(k) == x for k, x in want.items())]
    assert len(hits) <= 1, (name, labels, hits)
    return hits[0] if hits else None


class Boom(ControllerCallback):
    def progressed(self, *a: object) -> None:
        raise RuntimeError("a broken callback")


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory):
    tmp_path = tmp_path_factory.mktemp("exporter")
    raw = small_job("job", steps=12, dp=4, reliability={"max_restarts": 5, "hang_timeout_s": 30})
    spec = JobSpec.model_validate(raw)
    catalog = Catalog(f"sqlite:///{tmp_path / 'catalog.db'}")
    catalog.create_job("job", raw, spec.world_size, 12, str(tmp_path / "run"), None)
    clock = FakeClock()
    ckpts = FakeCheckpoints()
    workers = FakeWorkerGroup(clock, ckpts, ["h0", "h1", "h2"], 2, 12,
                              faults={1: Fault("crash", at_step=5, rank=3, log=XID79.format(host="h1"))})
    exporter = MetricsExporter("job", catalog, tmp_path / "run", clock, ettr_target=0.95, top_ranks=2,
                               steps_total=12)
    port = exporter.serve("127.0.0.1", 0)
    ctl = Controller(spec, catalog, tmp_path / "run", tmp_path / "ckpt", workers=workers, spares=FakeSpares(
        hosts=["h0", "h1", "h2"], count=0), checkpoints=ckpts, clock=clock,
        callbacks=CallbackList([CatalogWriter(catalog, "job", clock)], others=[Boom(), exporter]), poll_interval_s=0.5)
    assert ctl.run() is S.SUCCEEDED
    yield f"http://127.0.0.1:{port}/metrics", catalog
    exporter.close()


def test_a_gpu_fault_as_prometheus_sees_it(run) -> None:
    url, _ = run
    m = scrape(url)
    assert value(m, "orchestrator_step") == 12
    assert value(m, "orchestrator_attempt") == 2
    assert value(m, "orchestrator_ettr_target_ratio") == 0.95
    assert value(m, "orchestrator_job_state", state="succeeded") == 1
    assert value(m, "orchestrator_job_state", state="running") == 0
    assert value(m, "orchestrator_interruptions_total", category="faulty_gpu", component="gpu",
                 planned="false") == 1
    assert value(m, "orchestrator_detections_total", kind="crash") == 1
    assert value(m, "orchestrator_detection_seconds_count") == 1
    assert value(m, "orchestrator_restart_seconds_count") == 1
    assert value(m, "orchestrator_host_actions_total", state="cordoned") == 1
    assert value(m, "orchestrator_hosts", state="cordoned") == 1
    assert value(m, "orchestrator_failed_attempts_since_checkpoint") == 0
    assert value(m, "orchestrator_checkpoint_step") == 12
    causes = {dict(ls)["cause"] for (n, ls) in m if n == "orchestrator_time_lost_seconds_total"}
    assert causes == {"detection", "restart", "lost_work", "checkpoint_stall", "startup", "preflight", "unattributed"}
    # Two of four ranks (top_ranks=2), one aggregate per host the second attempt ran on, four quantiles.
    assert len([k for k in m if k[0] == "orchestrator_rank_step_seconds"]) == 2
    assert {dict(ls)["host"] for (n, ls) in m if n == "orchestrator_host_step_seconds"} == {"h0", "h2"}
    assert value(m, "orchestrator_rank_step_seconds_quantile", quantile="0.5") == 0.5


def test_read_only_and_only_metrics(run) -> None:
    url, _ = run
    with pytest.raises(urllib.error.HTTPError) as e:
        urllib.request.urlopen(urllib.request.Request(url, data=b"x", method="POST"), timeout=5)
    assert e.value.code == 405
    with pytest.raises(urllib.error.HTTPError) as e:
        urllib.request.urlopen(url.replace("/metrics", "/admin"), timeout=5)
    assert e.value.code == 404


def test_ettr_and_time_lost_from_the_catalog_and_metrics_jsonl(tmp_path: Path) -> None:
    """Started at t0, four 1-second steps ending at t0+2..t0+5, ended at t0+10: ETTR 4/10, startup 1 s."""
    catalog = Catalog(f"sqlite:///{tmp_path / 'catalog.db'}")
    raw = small_job("job", steps=4)
    catalog.create_job("job", raw, 2, 4, str(tmp_path), None)
    t0 = 1_700_000_000.0
    catalog.update_job("job", started_at=datetime.fromtimestamp(t0, UTC),
                       ended_at=datetime.fromtimestamp(t0 + 10, UTC))
    (tmp_path / "metrics.jsonl").write_text("".join(
        json.dumps({"step": s, "loss": 1.0, "tokens": 10, "step_seconds": 1.0, "attempt": 1, "time": t0 + 1 + s})
        + "\n" for s in range(1, 5)) + '{"step": 5, "partial')
    x = MetricsExporter("job", catalog, tmp_path, FakeClock(t0 + 10))
    x.refresh(t0 + 10, force=True)
    snap = x.snapshot()
    assert snap.ettr == pytest.approx(0.4)
    assert snap.time_lost["startup"] == pytest.approx(1.0)
    assert snap.time_lost["unattributed"] == pytest.approx(5.0)


def test_rank_summary_keeps_the_slowest_ranks_and_one_series_per_host() -> None:
    seconds = {r: 1.0 for r in range(64)}
    seconds[17], seconds[40] = 3.0, 2.0
    hosts = {r: f"h{r // 8}" for r in range(64)}
    s = summarize(seconds, hosts, top_k=2)
    assert s.top == [(17, "h2", 3.0), (40, "h5", 2.0)]
    assert len(s.host_max) == 8 and s.host_max["h2"] == 3.0 and s.host_max["h0"] == 1.0
    assert s.quantiles[0.5] == 1.0 and s.quantiles[1.0] == 3.0


def test_metrics_section_of_the_job_file(tmp_path: Path) -> None:
    from orchestrator.spec import JobFileError, load_job_file
    from tests.conftest import write_job

    ok = load_job_file(write_job(tmp_path / "ok.yaml", small_job(metrics={"host": "0.0.0.0", "port": 9464})))
    assert (ok.metrics.host, ok.metrics.port, ok.metrics.top_ranks) == ("0.0.0.0", 9464, 16)
    assert load_job_file(write_job(tmp_path / "d.yaml", small_job())).metrics.host == "127.0.0.1"
    for bad, field in (({"port": 70000}, "metrics.port"), ({"ettr_target": 1.5}, "metrics.ettr_target"),
                       ({"scrape": 1}, "metrics.scrape")):
        with pytest.raises(JobFileError, match=field.replace(".", r"\.")):
            load_job_file(write_job(tmp_path / "bad.yaml", small_job(metrics=bad)))
