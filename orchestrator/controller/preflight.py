"""Preflight: is every candidate host fit to start (or restart) on? A pure decision over what was probed.

Before the ranks of an attempt start, the worker group runs every candidate
host's probes through its node agent and a short collective over the candidate
ranks (an all-reduce of a known tensor; on GPU also a small matmul burn-in
checked against a CPU reference). `decide` turns those answers into the hosts
to take out and the evidence the classifier reads. No Ray, no clock.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

PREFLIGHT_TIMEOUT_S = 60.0
"""The whole preflight's time limit: probes and collective together."""


@dataclass(frozen=True, slots=True)
class PreflightReport:
    """What the worker group brought back from one preflight."""

    probes: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    """Host -> every probe result (ProbeResult.to_dict()) of that host's agent."""
    unanswered: dict[str, str] = field(default_factory=dict)
    """Host -> why its agent gave no answer within the deadline."""
    collective: dict[int, dict[str, Any]] = field(default_factory=dict)
    """Rank -> {"ok": bool, "message": str} of the collective check (empty when not run)."""
    rank_hosts: dict[int, str] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class PreflightDecision:
    ok: bool
    bad_hosts: tuple[str, ...] = ()
    detail: str = ""
    evidence: tuple[dict[str, Any], ...] = ()
    """The failed results, time-ordered, each with host and source."""


def decide(report: PreflightReport) -> PreflightDecision:
    """Hosts with a failed probe, a silent agent or a rank whose collective result was wrong are taken out.

    A collective that failed on every rank names no host (a rendezvous problem, not a
    host): the preflight fails without a culprit and the attempt is retried.
    """
    bad: dict[str, list[dict[str, Any]]] = {}
    for host, results in report.probes.items():
        for r in results:
            if r.get("severity") == "fail":
                bad.setdefault(host, []).append({**r, "host": r.get("host") or host})
    for host, why in report.unanswered.items():
        bad.setdefault(host, []).append({"host": host, "source": "agent", "severity": "fail", "at": 0.0,
                                         "message": f"health probes did not answer: {why}"})
    failed = {r: c for r, c in report.collective.items() if not c.get("ok")}
    if failed and len(failed) < len(report.collective):
        for rank, c in sorted(failed.items()):
            host = report.rank_hosts.get(rank, "")
            bad.setdefault(host, []).append({"host": host, "source": "collective", "severity": "fail",
                                             "at": float(c.get("at") or 0.0),
                                             "message": f"rank {rank}: preflight collective failed: "
                                                        f"{c.get('message')}"})
    if failed and not bad:
        msg = next(iter(failed.values())).get("message", "")
        return PreflightDecision(False, (), f"preflight collective failed on every rank: {msg}")
    if not bad:
        return PreflightDecision(True, (), f"preflight passed on {len(report.probes)} hosts"
                                 + (f" and {len(report.collective)} ranks" if report.collective else ""))
    evidence = tuple(sorted((e for es in bad.values() for e in es), key=lambda e: float(e.get("at") or 0.0)))
    hosts = tuple(sorted(bad))
    first = evidence[0]
    return PreflightDecision(False, hosts, f"preflight failed on {', '.join(hosts)}: host={first['host']}: "
                                           f"{first.get('message')}", evidence)


def reason_to_check(hosts: Iterable[str], suspects: Iterable[str], passed_at: Mapping[str, float], now: float,
                    max_age_s: float, last_gang: Iterable[str] | None = None) -> str | None:
    """Why the gang on `hosts` must be preflighted before it starts; None when it need not be.

    A preflight looks for broken hardware. A restart onto hosts that all passed one within `max_age_s` and then
    trained, after a failure that named none of them as faulty hardware (a killed or hung rank, a software
    error), would check again what was just found healthy: it is skipped, and its time with it. A host new to
    the job, a host the failure named (`suspects`), or an old pass means the whole gang is checked (the
    collective spans every rank). With `last_gang`, a host that did not train in it (a spare or an idle host
    joining) is checked too, whenever it last passed. `max_age_s` 0: every start is checked.
    """
    if max_age_s <= 0:
        return "every start is preflighted (preflight_max_age_s 0)"
    suspect = set(suspects)
    for host in sorted(set(hosts)):
        if host in suspect:
            return f"host {host} was named by the last failure"
        t = passed_at.get(host)
        if t is None:
            return f"host {host} has not been preflighted for this job"
        if last_gang is not None and host not in set(last_gang):
            return f"host {host} joins the gang (it did not train in the last attempt)"
        if now - t > max_age_s:
            return f"host {host} last passed a preflight {now - t:.0f} s ago"
    return None
