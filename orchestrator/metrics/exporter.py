"""The metrics exporter: a controller callback that serves the job's Prometheus metrics.

Event metrics (step, tokens/s, detection, restart and checkpoint durations) are
updated by the controller's hooks. ETTR, time lost by cause, interruptions by
category and hosts by state are read back from the catalog and metrics.jsonl
with `orchestrator.goodput`, the same code as `orchestrator report`, so the
dashboard and the report never disagree and a restarted controller carries on
from what was recorded. That read happens in the controller's thread at most
every `refresh_s` (at once after an interruption); a scrape only formats what is
already there, so a slow or hostile scraper never touches the catalog.

Every series has a `job` label. Per-rank step times are reduced (see `ranks.py`)
so a 16,384-rank job stays a few thousand series.
"""

from __future__ import annotations

import logging
import socket
import threading
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, make_server

from prometheus_client import CollectorRegistry, Gauge, Histogram, disable_created_metrics, make_wsgi_app
from prometheus_client import Counter as PCounter
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.exposition import ThreadingWSGIServer

from health.observations import Finding, FindingKind
from orchestrator.catalog.db import as_utc
from orchestrator.catalog.repository import Catalog
from orchestrator.controller.callbacks import ControllerCallback, InterruptionRecord, RankEnd, RankPlacement
from orchestrator.controller.monitor import Progress
from orchestrator.controller.state import ControllerState
from orchestrator.goodput import CAUSES, goodput, preflight_seconds, ts
from orchestrator.metrics.catalog_source import JsonlTail, interruption_view
from orchestrator.metrics.ranks import summarize

logger = logging.getLogger(__name__)

REFRESH_S = 5.0
HOST_STATES = ("healthy", "suspect", "cordoned")
DETECTION_BUCKETS = (0.5, 1, 2, 5, 10, 20, 30, 60, 120, 300, 600)
RESTART_BUCKETS = (1, 2, 5, 10, 20, 30, 60, 120, 300, 600, 1800)
CHECKPOINT_BUCKETS = (0.01, 0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 30, 60, 120, 300)
JOB_STATES = tuple(s.value for s in ControllerState)
FINDING_KINDS = tuple(k.value for k in FindingKind)
"""Always exported (0 until seen), so an alert on increase() sees the first one."""


@dataclass
class _Snapshot:
    """What the last catalog read found."""

    ettr: float | None = None
    time_lost: dict[str, float] = field(default_factory=dict)
    interruptions: Counter[tuple[str, str, bool]] = field(default_factory=Counter)
    detections: Counter[str] = field(default_factory=Counter)
    hosts: Counter[str] = field(default_factory=Counter)


class MetricsExporter(ControllerCallback):
    def __init__(self, job: str, catalog: Catalog, run_dir: str | Path, clock: Any, *, ettr_target: float = 0.9,
                 top_ranks: int = 16, steps_total: int | None = None, refresh_s: float = REFRESH_S) -> None:
        self.job, self.catalog, self.clock = job, catalog, clock
        self.top_ranks, self.refresh_s = top_ranks, refresh_s
        self.rows = JsonlTail(Path(run_dir) / "metrics.jsonl")
        self.registry = CollectorRegistry(auto_describe=True)
        reg, j = self.registry, ["job"]

        def gauge(name: str, doc: str) -> Any:
            return Gauge(name, doc, j, registry=reg).labels(job)

        gauge("orchestrator_ettr_target_ratio", "The job's ETTR target (job file metrics.ettr_target).").set(
            ettr_target)
        self.step = gauge("orchestrator_step", "Newest step every rank has completed.")
        self.steps_target = gauge("orchestrator_training_steps", "Steps the job trains for.")
        if steps_total is not None:
            self.steps_target.set(steps_total)
        self.loss = gauge("orchestrator_loss", "Newest training loss (rank 0).")
        self.tokens = gauge("orchestrator_tokens_per_second", "Training throughput of the newest step.")
        self.attempt = gauge("orchestrator_attempt", "Number of the current attempt (1 + restarts).")
        self.world = gauge("orchestrator_world_size", "Ranks of the current attempt.")
        self.ckpt_step = gauge("orchestrator_checkpoint_step", "Newest committed checkpoint's step.")
        self.failed_streak = gauge("orchestrator_failed_attempts_since_checkpoint",
                                   "Attempts that failed since the last new checkpoint (a crash loop grows it).")
        self.state = Gauge("orchestrator_job_state", "1 for the controller's current state.", ["job", "state"],
                           registry=reg)
        for s in JOB_STATES:
            self.state.labels(job, s).set(1 if s == ControllerState.PENDING.value else 0)
        self.detection = Histogram("orchestrator_detection_seconds", "Fault to detection, per interruption.", j,
                                   buckets=DETECTION_BUCKETS, registry=reg).labels(job)
        self.restart = Histogram("orchestrator_restart_seconds",
                                 "Ranks stopped to the first step after resuming, per interruption.", j,
                                 buckets=RESTART_BUCKETS, registry=reg).labels(job)
        self.checkpoint = Histogram("orchestrator_checkpoint_seconds",
                                    "Checkpoint durations: blocked (the loop waited) and save (whole write).",
                                    ["job", "phase"], buckets=CHECKPOINT_BUCKETS, registry=reg)
        self.host_actions = PCounter("orchestrator_host_actions", "Host state changes this job's controller made.",
                                     ["job", "state"], registry=reg)
        for s in HOST_STATES[1:]:  # present from the start, so increase() sees the first one
            self.host_actions.labels(job, s)
        reg.register(_CatalogCollector(self))
        self._lock = threading.Lock()
        self._snap = _Snapshot()
        self._lost_high: dict[str, float] = dict.fromkeys(CAUSES, 0.0)
        self._refreshed_at = float("-inf")
        self._rank_seconds: dict[int, float] = {}
        self._rank_hosts: dict[int, str] = {}
        self._straggler_scores: dict[int, tuple[str, float]] = {}
        self._stopped_at: float | None = None
        self._server: ThreadingWSGIServer | None = None

    # ---- serving -----------------------------------------------------------------------
    def serve(self, host: str = "127.0.0.1", port: int = 0) -> int:
        """Serve GET /metrics in a daemon thread; returns the bound port."""
        disable_created_metrics()  # the *_created series double a histogram's payload and no panel reads them
        metrics_app = make_wsgi_app(self.registry)

        def app(environ: dict[str, Any], start_response: Any) -> Iterable[bytes]:
            if environ.get("PATH_INFO", "/") not in ("/metrics", "/metrics/"):
                start_response("404 Not Found", [("Content-Type", "text/plain")])
                return [b"only /metrics is served here\n"]
            if environ.get("REQUEST_METHOD") not in ("GET", "HEAD"):
                start_response("405 Method Not Allowed", [("Allow", "GET, HEAD"), ("Content-Type", "text/plain")])
                return [b"read-only\n"]
            return metrics_app(environ, start_response)

        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        Server = type("Server", (ThreadingWSGIServer,), {"address_family": family})  # noqa: N806
        self._server = make_server(host, port, app, Server, handler_class=_QuietHandler)
        threading.Thread(target=self._server.serve_forever, name="metrics-http", daemon=True).start()
        return int(self._server.server_address[1])

    def close(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    # ---- the catalog read --------------------------------------------------------------
    def refresh(self, now: float, *, force: bool = False) -> None:
        if not force and now - self._refreshed_at < self.refresh_s:
            return
        self._refreshed_at = now
        job = self.catalog.get_job(self.job)
        if job is None:
            return
        views = [interruption_view(i) for i in self.catalog.interruptions(self.job)]
        rows = self.rows.read()
        started = ts(as_utc(job.started_at)) or (rows[0]["time"] - rows[0]["step_seconds"] if rows else None)
        snap = _Snapshot()
        if started is not None:
            g = goodput(started, ts(as_utc(job.ended_at)) or now, rows, views,
                        preflight_seconds([a.layout for a in job.attempts]))
            snap.ettr = g["ettr"]
            # A counter may not go down: `unattributed` includes the step in flight until it lands, so it is
            # exported as its highest value so far (it overshoots by at most one step).
            for cause, s in g["time_lost_seconds"].items():
                self._lost_high[cause] = max(self._lost_high.get(cause, 0.0), s)
        snap.time_lost = dict(self._lost_high)
        snap.interruptions = Counter((v.category, v.component, v.planned) for v in views if v.interrupting)
        snap.detections = Counter(v.kind for v in views)
        snap.hosts = Counter(h.state for h in self.catalog.hosts())
        with self._lock:
            self._snap = snap

    def snapshot(self) -> _Snapshot:
        with self._lock:
            return self._snap

    def rank_state(self) -> tuple[dict[int, float], dict[int, str], dict[int, tuple[str, float]]]:
        return self._rank_seconds, self._rank_hosts, self._straggler_scores

    # ---- hooks -------------------------------------------------------------------------
    def state_changed(self, old: ControllerState, new: ControllerState, reason: str | None) -> None:
        self.state.labels(self.job, old.value).set(0)
        self.state.labels(self.job, new.value).set(1)
        self.refresh(self.clock.time(), force=True)

    def heartbeat(self, now: float) -> None:
        self.refresh(now)

    def attempt_started(self, number: int, start_step: int, layout: dict[str, Any]) -> None:
        self.attempt.set(number)
        self._rank_seconds, self._straggler_scores = {}, {}

    def ranks_placed(self, number: int, placements: list[RankPlacement]) -> None:
        self._rank_hosts = {p.rank: p.host for p in placements}
        self.world.set(len(placements))

    def progressed(self, number: int, progress: Progress, now: float) -> None:
        self.step.set(progress.step)
        if progress.loss is not None:
            self.loss.set(progress.loss)
        if progress.tokens_per_second is not None:
            self.tokens.set(progress.tokens_per_second)
        if progress.rank_step_seconds:
            self._rank_seconds = dict(progress.rank_step_seconds)
        if progress.first_step and self._stopped_at is not None:
            self.restart.observe(max(0.0, now - self._stopped_at))
            self._stopped_at = None
        self.refresh(now)

    def checkpoint_committed(self, number: int, checkpoint: dict[str, Any]) -> None:
        self.ckpt_step.set(checkpoint["step"])
        self.failed_streak.set(0)
        for phase, key in (("blocked", "blocked_s"), ("save", "save_s")):
            if checkpoint.get(key) is not None:
                self.checkpoint.labels(self.job, phase).observe(float(checkpoint[key]))

    def straggler_found(self, number: int, finding: Finding, step: int) -> None:
        if finding.ranks and finding.score is not None:
            scores = dict(self._straggler_scores)
            scores[finding.ranks[0]] = (finding.hosts[0] if finding.hosts else "unknown", float(finding.score))
            keep = sorted(scores.items(), key=lambda kv: -kv[1][1])[:max(1, self.top_ranks)]
            self._straggler_scores = dict(keep)
        self.refresh(self.clock.time(), force=True)

    def attempt_ended(self, number: int, state: str, reason: str, ends: list[RankEnd], now: float) -> None:
        if state in ("failed", "lost"):
            self.failed_streak.inc()

    def interrupted(self, record: InterruptionRecord) -> None:
        if not record.planned:
            if record.fault_at is not None and record.detected_at is not None:
                self.detection.observe(max(0.0, record.detected_at - record.fault_at))
            self._stopped_at = record.stopped_at or record.detected_at
        for a in record.host_actions:
            self.host_actions.labels(self.job, a.state).inc()
        self.refresh(self.clock.time(), force=True)


class _CatalogCollector:
    """Formats the last catalog snapshot and the reduced per-rank step times at scrape time."""

    def __init__(self, exporter: MetricsExporter) -> None:
        self.x = exporter

    def describe(self) -> list[Metric]:
        return []

    def collect(self) -> Iterator[Metric]:
        x, job = self.x, self.x.job
        snap = x.snapshot()
        ettr = GaugeMetricFamily("orchestrator_ettr_ratio", "Effective training time ratio so far (goodput.py).",
                                 labels=["job"])
        if snap.ettr is not None:
            ettr.add_metric([job], snap.ettr)
        yield ettr
        lost = CounterMetricFamily("orchestrator_time_lost_seconds", "Wall-clock time not spent on surviving "
                                   "steps, by cause (goodput.py).", labels=["job", "cause"])
        for cause in CAUSES:
            lost.add_metric([job, cause], snap.time_lost.get(cause, 0.0))
        yield lost
        ints = CounterMetricFamily("orchestrator_interruptions", "Interruptions recorded in the catalog "
                                   "(stragglers excluded).", labels=["job", "category", "component", "planned"])
        for (cat, comp, planned), n in sorted(snap.interruptions.items()):
            ints.add_metric([job, cat, comp, str(planned).lower()], n)
        yield ints
        det = CounterMetricFamily("orchestrator_detections", "Catalog records by what was observed "
                                  "(crash, hang, node_lost, straggler, operator_stop, ...).", labels=["job", "kind"])
        kinds = dict.fromkeys(FINDING_KINDS, 0)
        kinds.update(snap.detections)
        for kind, n in sorted(kinds.items()):
            det.add_metric([job, kind], n)
        yield det
        hosts = GaugeMetricFamily("orchestrator_hosts", "Hosts known to the catalog, by state.",
                                  labels=["job", "state"])
        for s in sorted(set(HOST_STATES) | set(snap.hosts)):
            hosts.add_metric([job, s], snap.hosts.get(s, 0))
        yield hosts
        seconds, rank_hosts, scores = x.rank_state()
        summary = summarize(seconds, rank_hosts, x.top_ranks)
        rank = GaugeMetricFamily("orchestrator_rank_step_seconds", f"Newest step time of the {x.top_ranks} "
                                 "slowest ranks.", labels=["job", "rank", "host"])
        for r, h, s in summary.top:
            rank.add_metric([job, str(r), h], s)
        yield rank
        host = GaugeMetricFamily("orchestrator_host_step_seconds", "Newest step time of the slowest rank per host.",
                                 labels=["job", "host"])
        for h, s in sorted(summary.host_max.items()):
            host.add_metric([job, h], s)
        yield host
        q = GaugeMetricFamily("orchestrator_rank_step_seconds_quantile", "Step-time quantiles over every rank "
                              "(1 is the slowest).", labels=["job", "quantile"])
        for quantile, s in summary.quantiles.items():
            q.add_metric([job, f"{quantile:g}"], s)
        yield q
        st = GaugeMetricFamily("orchestrator_straggler_score", "Robust score of ranks the straggler detector "
                               "flagged in this attempt (highest first, at most top_ranks).",
                               labels=["job", "rank", "host"])
        for r, (h, score) in scores.items():
            st.add_metric([job, str(r), h], score)
        yield st


class _QuietHandler(WSGIRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - the base class's name
        pass


def start_exporter(spec: Any, catalog: Catalog, run_dir: str | Path, clock: Any,
                   node_ip: str | None = None) -> tuple[MetricsExporter, str]:
    """Build the job's exporter, serve it as the job file says and return it with its URL."""
    m = spec.metrics
    exporter = MetricsExporter(spec.name, catalog, run_dir, clock, ettr_target=m.ettr_target, top_ranks=m.top_ranks,
                               steps_total=spec.training.steps)
    port = exporter.serve(m.host, m.port)
    host = m.host if m.host not in ("0.0.0.0", "::", "") else (node_ip or "127.0.0.1")
    return exporter, f"http://{f'[{host}]' if ':' in host else host}:{port}/metrics"
