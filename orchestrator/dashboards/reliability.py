"""The Grafana reliability dashboard as code (grafana-foundation-sdk), generated into dashboards/reliability.json.

Every query reads only metrics the exporter serves (see `orchestrator.metrics.exporter`);
the real-Prometheus test runs each one of them. A `job` variable picks the
training job(s), a `datasource` variable the Prometheus.
"""

from __future__ import annotations

import json
from typing import Any

from grafana_foundation_sdk.builders import barchart, piechart, stat, table, timeseries
from grafana_foundation_sdk.builders import dashboard as db
from grafana_foundation_sdk.builders import prometheus as prom
from grafana_foundation_sdk.builders.common import StackingConfig, VizLegendOptions
from grafana_foundation_sdk.cog.encoder import JSONEncoder
from grafana_foundation_sdk.models import dashboard as dm
from grafana_foundation_sdk.models.common import LegendDisplayMode, LegendPlacement, StackingMode
from grafana_foundation_sdk.models.prometheus import PromQueryFormat

UID = "orchestrator-reliability"
DS = dm.DataSourceRef(type_val="prometheus", uid="${datasource}")
J = 'job=~"$job"'


def _q(expr: str, legend: str = "", *, instant: bool = False, table_format: bool = False, ref: str = "A") -> Any:
    q = prom.Dataquery().expr(expr).ref_id(ref).datasource(DS)
    if legend:
        q = q.legend_format(legend)
    q = q.instant() if instant else q.range()
    if table_format:
        q = q.format(PromQueryFormat.TABLE)
    return q


def _targets(panel: Any, *queries: tuple[str, str]) -> Any:
    for i, (expr, legend) in enumerate(queries):
        panel = panel.with_target(_q(expr, legend, ref=chr(ord("A") + i)))
    return panel


def _ts(title: str, desc: str, unit: str, *queries: tuple[str, str], w: int = 12, stacked: bool = False) -> Any:
    p = (timeseries.Panel().title(title).description(desc).datasource(DS).unit(unit).span(w).height(8)
         .legend(VizLegendOptions().show_legend(True).display_mode(LegendDisplayMode.LIST)
                 .placement(LegendPlacement.BOTTOM)))
    if stacked:
        p = p.stacking(StackingConfig().mode(StackingMode.NORMAL)).fill_opacity(40)
    return _targets(p, *queries)


def _quantiles(metric: str, by: str = "") -> list[tuple[str, str]]:
    """p50 and p90 over every observation so far (cumulative buckets: interruptions are rare events)."""
    extra = f", {by}" if by else ""
    suffix = f" {{{{{by}}}}}" if by else ""
    return [(f"histogram_quantile({q}, sum by (le{extra}) ({metric}_bucket{{{J}}}))", f"p{int(q * 100)}{suffix}")
            for q in (0.5, 0.9)]


def build() -> dict[str, Any]:
    d = (db.Dashboard("Training reliability").uid(UID).tags(["orchestrator", "reliability"]).refresh("30s")
         .time("now-6h", "now").timezone("browser").editable()
         .description("ETTR, time lost, interruptions by root cause (Llama 3 Table 5), recovery latency, "
                      "checkpoints, hosts and stragglers of the jobs the orchestrator runs.")
         .with_variable(db.DatasourceVariable("datasource").label("Prometheus").type("prometheus"))
         .with_variable(db.QueryVariable("job").label("Job").datasource(DS)
                        .query("label_values(orchestrator_step, job)").multi(True).include_all(True)
                        .refresh(dm.VariableRefresh.ON_TIME_RANGE_CHANGED)))

    d = d.with_row(db.Row("Effective training time"))
    d = d.with_panel(
        stat.Panel().title("ETTR now").description("Productive time / wall-clock time since the job started.")
        .datasource(DS).unit("percentunit").span(4).height(8).min(0).max(1)
        .with_target(_q(f"orchestrator_ettr_ratio{{{J}}}", "{{job}}", instant=True)))
    d = d.with_panel(_ts("ETTR over time against the target", "The line under the target is time lost.",
                         "percentunit", (f"orchestrator_ettr_ratio{{{J}}}", "ETTR {{job}}"),
                         (f"orchestrator_ettr_target_ratio{{{J}}}", "target {{job}}"), w=20).min(0).max(1))
    d = d.with_panel(_ts("Time lost by cause", "Wall-clock seconds not spent on surviving steps (goodput.py).",
                         "s", (f"sum by (cause) (orchestrator_time_lost_seconds_total{{{J}}})", "{{cause}}"),
                         stacked=True))
    d = d.with_panel(_ts("Training throughput", "Tokens per second of the newest step.", "short",
                         (f"orchestrator_tokens_per_second{{{J}}}", "{{job}}"),))

    d = d.with_row(db.Row("Interruptions by root cause"))
    d = d.with_panel(
        table.Panel().title("Unexpected interruptions by category (Table 5 view)")
        .description("Counts per Llama 3 Table 5 category; planned stops excluded.").datasource(DS).span(12).height(9)
        .with_target(_q(f'sum by (category, component) (orchestrator_interruptions_total{{{J}, planned="false"}})',
                        instant=True, table_format=True)))
    d = d.with_panel(
        piechart.Panel().title("Unexpected interruptions by component").datasource(DS).span(6).height(9)
        .with_target(_q(f'sum by (component) (orchestrator_interruptions_total{{{J}, planned="false"}})',
                        "{{component}}", instant=True)))
    d = d.with_panel(
        barchart.Panel().title("What the detectors saw").description("Catalog records by kind (crash, hang, "
                                                                       "node_lost, straggler, operator stop).")
        .datasource(DS).span(6).height(9)
        .with_target(_q(f"sum by (kind) (orchestrator_detections_total{{{J}}})", "{{kind}}", instant=True,
                        table_format=True)))

    d = d.with_row(db.Row("Recovery"))
    d = d.with_panel(_ts("Detection latency", "Fault to detection.", "s",
                         *_quantiles("orchestrator_detection_seconds"), w=8))
    d = d.with_panel(_ts("Restart latency", "Ranks stopped to the first step after resuming.", "s",
                         *_quantiles("orchestrator_restart_seconds"), w=8))
    d = d.with_panel(_ts("Checkpoint durations", "blocked: the loop waited; save: the whole (async) write.", "s",
                         *_quantiles("orchestrator_checkpoint_seconds", "phase"), w=8))

    d = d.with_row(db.Row("Hosts and stragglers"))
    d = d.with_panel(_ts("Hosts by state", "Hosts known to the catalog.", "short",
                         (f"max by (state) (orchestrator_hosts{{{J}}})", "{{state}}"), w=8, stacked=True))
    d = d.with_panel(_ts("Step time of the slowest ranks", "The exporter's top-k slowest ranks against the median "
                         "rank; straggler scores are the detector's robust z-scores.", "s",
                         (f"orchestrator_rank_step_seconds{{{J}}}", "rank {{rank}} ({{host}})"),
                         (f'orchestrator_rank_step_seconds_quantile{{{J}, quantile="0.5"}}', "median rank"),
                         (f"orchestrator_straggler_score{{{J}}}", "score rank {{rank}}"), w=8))
    d = d.with_panel(_ts("Step time per host (slowest 20)", "Slowest rank on each host.", "s",
                         (f"topk(20, orchestrator_host_step_seconds{{{J}}})", "{{host}}"), w=8))
    d = d.with_panel(_ts("Progress", "Step every rank has completed, and the attempt.", "short",
                         (f"orchestrator_step{{{J}}}", "step {{job}}"),
                         (f"orchestrator_attempt{{{J}}}", "attempt {{job}}")))
    d = d.with_panel(_ts("Crash-loop watch", "Failed attempts since the last new checkpoint.", "short",
                         (f"orchestrator_failed_attempts_since_checkpoint{{{J}}}", "{{job}}")))
    return json.loads(json.dumps(d.build(), cls=JSONEncoder))


def render() -> str:
    return json.dumps(build(), indent=2, sort_keys=True) + "\n"


def panel_queries(dashboard: dict[str, Any]) -> list[tuple[str, list[str]]]:
    """(panel title, its query expressions) for every panel of a dashboard JSON."""
    return [(p["title"], [t["expr"] for t in p.get("targets", [])])
            for p in dashboard["panels"] if p.get("type") != "row"]
