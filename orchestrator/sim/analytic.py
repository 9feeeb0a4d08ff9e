"""The analytic expected ETTR of Kokolis et al. (arXiv:2410.21680), for a scenario's parameters.

E[ETTR] ~ (1 - N * r * (u0 + dt/2)) / (1 + w/dt): N nodes failing at r per node
per unit time, each failure costing the restart overhead u0 plus on average half
a checkpoint interval dt of lost work, and every interval paying the blocking
write w. With in-memory snapshots every dt_s (blocking w_s), failures whose
snapshot survives lose dt_s/2 instead, and the snapshots' stall joins the
denominator. Planned interruptions are not in the paper's formula; a variant
charges each its downtime.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from orchestrator.sim.evidence import SURFACES
from orchestrator.sim.scenario import Scenario
from orchestrator.taxonomy import HARDWARE_CATEGORIES

DAY = 86_400.0


@dataclass(frozen=True)
class AnalyticInputs:
    nodes: int
    failures_per_node_day: float
    restart_overhead_s: float
    """u0: rate-weighted mean of detection + teardown + preflight + restart (+ new gang where a host is replaced)."""
    checkpoint_interval_s: float
    checkpoint_blocking_s: float
    lost_work_interval_s: float
    """The interval whose half a failure loses: dt, or the snapshot interval where snapshots survive."""
    snapshot_stall_fraction: float
    planned_per_day: float
    planned_downtime_s: float


def inputs(sc: Scenario) -> AnalyticInputs:
    f, rc, ck = sc.failures, sc.recovery, sc.checkpoint
    counts = {k: n for k, n in f.counts.items() if n}
    total = sum(counts.values())
    u0 = 0.0
    lost_dt = 0.0
    dt = max(1, round(ck.interval_minutes * 60 / sc.job.step_seconds)) * sc.job.step_seconds
    snap_dt = ck.in_memory_interval_steps * sc.job.step_seconds
    for k, n in counts.items():
        surface = SURFACES[k]
        replaced = k in HARDWARE_CATEGORIES or surface == "node_lost"
        u0 += n / total * (rc.detection_seconds[surface] + rc.teardown_seconds + rc.preflight_seconds
                           + rc.restart_seconds + (rc.new_gang_seconds if replaced else 0.0))
        lost_dt += n / total * (min(dt, snap_dt) if snap_dt and surface != "sdc" else dt)
    snap_stall = ck.in_memory_blocking_seconds / snap_dt if snap_dt else 0.0
    return AnalyticInputs(
        nodes=sc.cluster.hosts, failures_per_node_day=total * f.rate_scale / (f.over_days * f.on_hosts),
        restart_overhead_s=u0, checkpoint_interval_s=dt, checkpoint_blocking_s=ck.blocking_seconds,
        lost_work_interval_s=lost_dt, snapshot_stall_fraction=snap_stall,
        planned_per_day=f.planned * f.rate_scale / f.over_days,
        planned_downtime_s=rc.planned_seconds + rc.teardown_seconds + rc.restart_seconds)


def expected_ettr(a: AnalyticInputs, *, planned: bool = False) -> float:
    lam = a.nodes * a.failures_per_node_day / DAY
    lost = lam * (a.restart_overhead_s + a.lost_work_interval_s / 2)
    if planned:
        lost += a.planned_per_day / DAY * a.planned_downtime_s
    return (1 - lost) / (1 + a.checkpoint_blocking_s / a.checkpoint_interval_s + a.snapshot_stall_fraction)


def analytic(sc: Scenario) -> dict[str, Any]:
    a = inputs(sc)
    return {"ettr_analytic": expected_ettr(a), "ettr_analytic_with_planned": expected_ettr(a, planned=True),
            "analytic_inputs": asdict(a)}
