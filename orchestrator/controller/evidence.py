"""Evidence of an interruption: what the classifier reads and what makes a failure repeatable.

The evidence of an attempt that failed is the finding that ended it (exit
codes, signals, the hang's collective), the suspected hosts' probe results
(NVML, kernel log, EDAC, BMC, storage; time-ordered, each line with its host
and source) and the end of each culprit rank's log, read through its
supervisor. The signature is the error a culprit died with,
normalised (addresses, pids, times and numbers blanked) so that the same bug
seen twice compares equal.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from orchestrator.classifier import Verdict, classify
from orchestrator.controller.callbacks import HostAction, InterruptionRecord
from orchestrator.controller.failure_policy import AttemptOutcome, FailureDecision, OutcomeKind

_EXC_LINE = re.compile(r"^(?:[\w.]+\.)?(?P<type>[A-Z]\w*(?:Error|Exception|Exit|Interrupt))(?::\s*(?P<msg>.*))?$")
_NOISE = re.compile(r"0x[0-9a-fA-F]+|\b\d+(?:\.\d+)?\b|'[^']*'|\"[^\"]*\"")


@dataclass(frozen=True, slots=True)
class Evidence:
    text: str
    log_tails: dict[int, str]
    signature: str
    exit_signals: tuple[str, ...]
    probes: tuple[dict[str, Any], ...] = ()
    """Warn and fail probe results of the suspected hosts, time-ordered."""


def probe_line(r: dict[str, Any]) -> str:
    """One probe result as the classifier reads it: host (and GPU) and source fields, then the message."""
    where = f"host={r.get('host', '')}" + (f" gpu={r['gpu']}" if r.get("gpu") is not None else "")
    return f"{where} source={r.get('source') or r.get('probe')} severity={r.get('severity')}: {r.get('message')}"


def merge_probe_evidence(*groups: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Non-ok results of every group, once each, in time order."""
    seen: set[tuple[str, str, str]] = set()
    out = []
    for r in (r for g in groups for r in g):
        key = (str(r.get("host")), str(r.get("source")), str(r.get("message")))
        if r.get("severity") == "ok" or key in seen:
            continue
        seen.add(key)
        out.append(r)
    return sorted(out, key=lambda r: float(r.get("at") or 0.0))


def error_signature(log_tail: str) -> str:
    """The last exception a log shows, with its variable parts blanked; empty when it shows none."""
    for line in reversed(log_tail.splitlines()):
        m = _EXC_LINE.match(line.strip())
        if m:
            msg = _NOISE.sub("#", m.group("msg") or "")
            return f"{m.group('type')}: {msg}".strip()[:300]
    return ""


def gather_evidence(detail: str, finding: dict[str, Any] | None, log_tails: dict[int, str],
                    probes: list[dict[str, Any]] | None = None) -> Evidence:
    """`probes`: the suspected hosts' probe results fetched from their agents; merged with any the finding
    carries (a BAD_GPU or preflight finding holds the results that raised it)."""
    found = (finding or {}).get("evidence") or {}
    exits = found.get("exits", [])
    signals = tuple(e["signal"] for e in exits if e.get("signal"))
    sig = next((s for s in (error_signature(t) for _, t in sorted(log_tails.items())) if s), "")
    merged = merge_probe_evidence(list(found.get("probes") or []), list(probes or []))
    text = "\n".join([detail, *(probe_line(r) for r in merged), *(t for _, t in sorted(log_tails.items()))])
    return Evidence(text, log_tails, sig, signals, tuple(merged))


def classify_evidence(kind: OutcomeKind, ev: Evidence) -> Verdict | None:
    if not kind.failed:
        return None
    return classify(ev.text, kind=kind.value, exit_signals=ev.exit_signals)


def interruption_record(job: str, attempt: int, o: AttemptOutcome, d: FailureDecision, verdict: Verdict | None,
                        ev: Evidence, now: float) -> InterruptionRecord:
    """The catalog's record of one interruption: what happened, the evidence, the verdict and the decision."""
    planned = o.kind is OutcomeKind.STOPPED
    v = verdict.to_dict() if verdict is not None else {}
    f = o.finding or {}
    actions = [HostAction(h, "cordoned", f"lemon: repeated hardware interruptions ({d.reason})"
                          if h in d.lemon_hosts else d.reason) for h in d.cordon_hosts]
    actions += [HostAction(h, "suspect", d.reason) for h in d.suspect_hosts]
    return InterruptionRecord(
        job=job, attempt=attempt, planned=planned,
        kind="operator_stop" if planned else o.kind.value, category=v.get("category", "unknown"),
        component=v.get("component", "unknown"), confidence=v.get("confidence", 0.0),
        explanation=o.detail + (f" | {v['explanation']}" if v else ""), decision=d.reason,
        ranks=o.culprit_ranks, hosts=o.culprit_hosts, gpus=tuple(v.get("gpus", ())),
        evidence={"detail": o.detail, "finding": o.finding, "verdict": v, "xids": v.get("xids", []),
                  "log_tails": {str(r): t for r, t in ev.log_tails.items()}, "signature": o.signature,
                  "probes": list(ev.probes)},
        evidence_text=None if planned else ev.text, fault_at=f.get("fault_at") or f.get("detected_at") or now,
        detected_at=f.get("detected_at") or now, stopped_at=now, step_at_fault=o.step_at_fault,
        resume_step=o.committed_step, steps_lost=max(0, o.step_at_fault - o.committed_step),
        host_actions=tuple(actions))


def rollback_record(job: str, attempt: int, rank: int, host: str, rb: dict[str, Any], now: float) -> InterruptionRecord:
    """A loss rollback done in place by the trainer: its own interruption, classified, never a host's fault."""
    text = f"loss guard: {rb.get('reason')} at step {rb.get('at_step')} on every replica"
    v = classify(text)
    category = v.category if v.component in ("dependency", "unknown") else "software_bug"
    component = v.component if category == v.category else "dependency"
    at = float(rb.get("time") or now)
    skipped = int(rb.get("skipped_batches") or 0)
    return InterruptionRecord(
        job=job, attempt=attempt, planned=False, kind="loss_rollback", category=category, component=component,
        confidence=v.confidence,
        explanation=f"{text}; rolled back to step {rb.get('to_step')} and skipped {skipped} batches",
        decision="rolled back in place; no host is at fault (the loss is the same on every replica)",
        ranks=(rank,), hosts=(), evidence={"rollback": rb, "reported_by": {"rank": rank, "host": host}},
        evidence_text=text, fault_at=at, detected_at=at, stopped_at=at, step_at_fault=rb.get("at_step"),
        resume_step=rb.get("to_step"), steps_lost=skipped, resumed_at=now)
