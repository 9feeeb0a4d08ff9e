"""Classify an interruption's evidence into the Llama 3 taxonomy (DESIGN.md, "How evidence decides a category").

The evidence is read in time order across hosts (orchestrator.evidence_lines),
lines that never decide are set aside, and every remaining line is matched
against real signatures (orchestrator.classifier_rules). The earliest line that
names a cause wins over what follows it: an Xid 79 on one host followed by
watchdog timeouts and connection resets on every other rank is `faulty_gpu` on
that host. Signatures that are often consequences (application Xids, CUDA
illegal addresses, RDMA retry errors, EIO on a path) decide only when nothing
stronger is present. A timed-out collective decides `nccl_watchdog_timeout`
only when nothing earlier names a cause; evidence that names no fault is
`unknown`. An Xid 94/95 (an ECC error that names no location) takes its
location, SRAM or DRAM, from the counters of the same GPU on other lines.

Confidence is the deciding signature's specificity (high for a hardware
signature that names the cause, lower when inferred), raised a little by
independent corroborating signatures and lowered when a different cause
appears at the same moment. The controller cordons a host only at or above
CORDON_CONFIDENCE; below it a hardware verdict makes the host `suspect`.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

from orchestrator.classifier_rules import (
    CLOCK_EVENT_REASONS,
    HW_THERMAL_SLOWDOWN_BIT,
    RULES,
    SRAM_NAMED,
    XID_COUNT_RE,
    XID_RE,
    XID_TABLE,
    Role,
)
from orchestrator.evidence_lines import Line, parse, subjects
from orchestrator.taxonomy import COMPONENT_OF

CORDON_CONFIDENCE = 0.8
"""Recommended threshold: a single specific hardware signature scores 0.85-0.95, inferred ones 0.6-0.75."""

GPU_INDEX_RE = re.compile(r"\bGPU[ _#:]?(?:index[ =:]*)?(?P<idx>\d{1,2})\b(?![.:]\d)", re.IGNORECASE)
SAME_MOMENT = timedelta(seconds=2)
# When two causes appear at the same moment, the more specific one names the fault:
# (first, refined): a machine check the EDAC driver decodes as a DIMM error is memory, a GPU or NIC
# dropped together with its PCIe switch is the IO board, a link that went down with its adapter is the NIC.
SDC_NOT_CONFIRMED = re.compile(r"(?:replay\w*|recomput\w*|re-?r[au]n)\b.{0,120}(?:also (?:disagree|differ|mismatch)\w*|"
                               r"reproduc\w+ the (?:mismatch|difference|disagreement)|not confirmed|same (?:wrong )?result)",
                               re.IGNORECASE)
"""A replay elsewhere that reproduces the disagreement: the data or code, not the host, is at fault."""
SDC_CONFIRMED = "replica disagreement confirmed by a replay"
DISAGREEMENT = re.compile(r"disagree|diverge|differ|mismatch|miscompar|corrupt|!=", re.IGNORECASE)
NON_FINITE_LOSS = "loss or gradient became NaN/inf"
DEVICE_LOST = {"GPU fallen off the bus", "host adapter failure (mlx5/HCA)", "PCIe slot link down",
               "Xid 79 (GPU has fallen off the bus)"}
PCI_ADDR = re.compile(r"(?:PCI:|\b[0-9a-f]{4}:)(?:[0-9a-f]{4}:)?(?P<bus>[0-9a-f]{2}):(?P<dev>[0-9a-f]{2})", re.IGNORECASE)
PCI_BUS = re.compile(r"(?:PCI:)?\b(?:[0-9a-f]{4}|[0-9a-f]{8}):(?P<bus>[0-9a-f]{2}):[0-9a-f]{2}\b", re.IGNORECASE)
ECC_UNLOCATED = ("Xid 94 ", "Xid 95 ")
NVME_CONTROLLER = re.compile(r"\bnvme(\d+)(?:n\d+)?\b")
REPLICA_ID = re.compile(r"\b(?:replica|dp_rank)\"?\s*[:=#]?\s*(\d+)\b", re.IGNORECASE)
CUDA_ECC = "CUDA reports an uncorrectable ECC error"
REFINES = {("cpu", "system_memory"), ("faulty_gpu", "io_expansion_board"), ("nic", "io_expansion_board"),
           ("network_switch_cable", "nic")}


@dataclass(frozen=True, slots=True)
class Verdict:
    category: str
    component: str
    confidence: float
    explanation: str
    hosts: tuple[str, ...] = ()
    gpus: tuple[int, ...] = ()
    xids: tuple[int, ...] = ()
    signatures: tuple[str, ...] = field(default=())

    @property
    def cordon(self) -> bool:
        """A hardware verdict confident enough to take the host out of service (else it is only suspect)."""
        return COMPONENT_OF[self.category] in ("gpu", "host", "network") and self.confidence >= CORDON_CONFIDENCE

    def to_dict(self) -> dict[str, Any]:
        return {"category": self.category, "component": self.component, "confidence": round(self.confidence, 3),
                "explanation": self.explanation, "hosts": list(self.hosts), "gpus": list(self.gpus),
                "xids": list(self.xids), "signatures": list(self.signatures)}


@dataclass(frozen=True, slots=True)
class Hit:
    category: str
    strength: float
    role: Role
    name: str
    line: Line
    order: int  # position of the line in time order


def _pci_buses(raw: str) -> set[str]:
    return {m.group("bus").lower() for m in PCI_BUS.finditer(raw)}


def _ecc_located(hits: list[Hit]) -> list[Hit]:
    """Xid 94/95 (contained/uncontained ECC error) say nothing of where the error was: DRAM (HBM) or on-chip SRAM.

    NVIDIA's catalog lists both under these codes; the location is in NVML's counters (`nvidia-smi -q -d ECC`:
    `SRAM Uncorrectable Parity/SEC-DED`, `DRAM Uncorrectable`), a DCGM health report or the driver's own line, often
    read a little later on another line. An Xid 94/95 takes SRAM when the same host (and the same GPU, where both
    lines name its PCI address) reports an uncorrectable SRAM error and no uncorrectable DRAM error.
    """
    located = [h for h in hits if h.category in ("gpu_sram_memory", "gpu_hbm3_memory")
               and not h.name.startswith(ECC_UNLOCATED) and h.name != CUDA_ECC]
    out = []
    for h in hits:
        if h.name.startswith(ECC_UNLOCATED) and h.category == "gpu_hbm3_memory":
            buses = _pci_buses(h.line.raw)
            near = {o.category for o in located if o.line.host == h.line.host
                    and not (buses and _pci_buses(o.line.raw) and not buses & _pci_buses(o.line.raw))}
            if near == {"gpu_sram_memory"}:
                h = dataclasses.replace(h, category="gpu_sram_memory", strength=0.92, name=h.name + " in SRAM")
        out.append(h)
    return out


def _xid_hits(line: Line, order: int) -> list[Hit]:
    hits = []
    codes = [int(m.group("code")) for rx in (XID_RE, XID_COUNT_RE) for m in rx.finditer(line.text)]
    for code in dict.fromkeys(codes):
        if code not in XID_TABLE:
            continue
        cat, strength, role, what = XID_TABLE[code]
        if code in (94, 95) and SRAM_NAMED.search(line.text):
            cat, strength, what = "gpu_sram_memory", 0.92, what + " in SRAM"
        hits.append(Hit(cat, strength, role, f"Xid {code} ({what})", line, order))
    return hits


def _clock_event_hits(line: Line, order: int) -> list[Hit]:
    """The clock-event reasons bitmask with its HW thermal slowdown bit set (0x40; dcgm-exporter prints it in decimal)."""
    for m in CLOCK_EVENT_REASONS.finditer(line.text):
        if int(m.group("value"), 0) & HW_THERMAL_SLOWDOWN_BIT:
            return [Hit("gpu_thermal_interface_sensor", 0.9, "cause", "HW thermal slowdown bit in the clock-event reasons",
                        line, order)]
    return []


def _rule_hits(line: Line, order: int) -> list[Hit]:
    seen: set[str] = set()
    hits = []
    for rule in RULES:
        if rule.name not in seen and rule.pattern.search(line.text):
            seen.add(rule.name)
            hits.append(Hit(rule.category, rule.strength, rule.role, rule.name, line, order))
    return hits


def _in_time_order(lines: list[Line]) -> list[Line]:
    """Stable sort by each line's own or inherited time; lines without any time keep text order."""
    if all(ln.time is None for ln in lines):
        return lines
    return sorted(lines, key=lambda ln: (ln.time, ln.index))


def _cancel_recovered(hits: list[Hit], lines: list[Line]) -> list[Hit]:
    """Drop warnings that a later line says were retried and recovered (same device or server, same host).

    A link that went down and came back is a flap: still the network's fault when nothing else names a cause
    (DESIGN.md rule 6), but a recovered warning beside a real fault (rule 3), so it becomes weak.
    """
    out = []
    for h in hits:
        subj = subjects(h.line.raw)
        recovered = subj and any(
            ln.recovery and ln.index > h.line.index and subj & subjects(ln.raw)
            and (ln.host is None or h.line.host is None or ln.host == h.line.host) for ln in lines)
        if not recovered:
            out.append(h)
        elif h.category == "network_switch_cable":
            out.append(dataclasses.replace(h, role="weak"))
    return out


def _same_moment(a: Hit, b: Hit) -> bool:
    if a.line.host and b.line.host and a.line.host != b.line.host:
        return False
    if a.line.own_time and b.line.own_time and a.line.time and b.line.time:
        return abs(a.line.time - b.line.time) <= SAME_MOMENT
    return abs(a.line.index - b.line.index) <= 3


def _devices_lost_with(first: Hit, hits: list[Hit]) -> set[str]:
    """PCI bus:device addresses of devices lost on the first cause's host at the same moment."""
    lost = set()
    for h in hits:
        if h.name in DEVICE_LOST and (h is first or _same_moment(first, h)) and h.line.host == first.line.host:
            lost |= {f"{m.group('bus')}:{m.group('dev')}".lower() for m in PCI_ADDR.finditer(h.line.raw)}
    return lost


def _drives_lost_with(first: Hit, hits: list[Hit]) -> set[str]:
    """NVMe controllers that failed on the first cause's host at the same moment."""
    return {m.group(1) for h in hits if h.category == "ssd" and h.line.host == first.line.host
            and (h is first or _same_moment(first, h)) for m in NVME_CONTROLLER.finditer(h.line.raw)}


def _replica_host(first: Hit, ordered: list[Line]) -> str | None:
    """The host of the replica a replay report names: the earliest earlier line about that replica, on another host.

    A table row is read as its `column=value` fields, so that a `dp_rank` column names the replica."""
    m = REPLICA_ID.search(first.line.fields or first.line.raw)
    if not m:
        return None
    for ln in ordered:
        if ln is first.line:
            return None
        if ln.host and ln.host != first.line.host and any(r.group(1) == m.group(1)
                                                          for r in REPLICA_ID.finditer(ln.fields or ln.raw)):
            return ln.host
    return None


def _replay_report(h: Hit) -> bool:
    """A replay's own report (it agrees with the majority) comes from the healthy host that ran it, not the culprit."""
    return h.name == SDC_CONFIRMED and not DISAGREEMENT.search(h.line.text)


def _short(s: str) -> str:
    s = s.strip()
    return s if len(s) <= 160 else s[:157] + "..."


def _hosts(hits: list[Hit]) -> tuple[str, ...]:
    return tuple(dict.fromkeys(h.line.host for h in sorted(hits, key=lambda h: h.order) if h.line.host))


def _gpus(hits: list[Hit]) -> tuple[int, ...]:
    return tuple(sorted({int(m.group("idx")) for h in hits for m in GPU_INDEX_RE.finditer(h.line.raw)}))


def classify(text: str, *, kind: str | None = None, exit_signals: Iterable[str] = ()) -> Verdict:
    """Classify free-text evidence (logs, kernel messages, SEL, probe output) plus what the controller observed.

    Args:
        text: the evidence: log tails, dmesg or journal, BMC events, check results, from one or several hosts.
        kind: the Finding kind that interrupted training (crash, hang, node_lost, ...), if any.
        exit_signals: signals the ranks died of.
    """
    lines = parse(text)
    ordered = _in_time_order(lines)
    xids = {int(m.group("code")) for ln in lines for m in XID_RE.finditer(ln.raw)}
    hits: list[Hit] = []
    for order, ln in enumerate(ordered):
        if ln.text:
            hits += _xid_hits(ln, order) + _clock_event_hits(ln, order) + _rule_hits(ln, order)
    xids = tuple(sorted(xids | {int(m.group("code")) for h in hits for m in XID_COUNT_RE.finditer(h.line.text)}))
    hits = _ecc_located(_cancel_recovered(hits, lines))
    if any(SDC_NOT_CONFIRMED.search(ln.text) for ln in lines):
        hits = [h for h in hits if h.category != "silent_data_corruption"]
    if any(h.name == SDC_CONFIRMED for h in hits):
        # A replay elsewhere agreed with the other replicas: one replica's NaN or spike was its hardware.
        hits = [dataclasses.replace(h, category="silent_data_corruption", strength=0.72, name="replica loss diverged")
                if h.name == NON_FINITE_LOSS else h for h in hits]
    signatures = tuple(dict.fromkeys(h.name for h in sorted(hits, key=lambda h: h.order)))
    causes = [h for h in hits if h.role == "cause"] or [h for h in hits if h.role == "weak"]
    timeouts = [h for h in hits if h.role == "timeout"]
    signals = sorted(set(exit_signals))
    if not causes:
        if "SIGSEGV" in signals:
            return Verdict("software_bug", "dependency", 0.55, "a rank died of SIGSEGV and no hardware signature",
                           (), (), xids, signatures)
        if timeouts:
            first = min(timeouts, key=lambda h: h.order)
            return Verdict("nccl_watchdog_timeout", "unknown", 0.5,
                           f"{first.name}, and nothing names a cause: line {first.line.index + 1}: "
                           f"{_short(first.line.raw)}", _hosts(timeouts), _gpus(timeouts), xids, signatures)
        if kind == "hang":
            return Verdict("nccl_watchdog_timeout", "unknown", 0.4,
                           "no progress until the hang watchdog fired, and no signature of a cause",
                           (), (), xids, signatures)
        why = f" (ranks died of {', '.join(signals)})" if signals else ""
        return Verdict("unknown", "unknown", 0.0, f"no signature names a fault{why}", (), (), xids, signatures)

    first = min(causes, key=lambda h: (h.order, -h.strength))
    for h in causes:
        if (first.category, h.category) in REFINES and _same_moment(first, h):
            first = h
    early = [t for t in timeouts if t.line.own_time and first.line.own_time and t.line.time and first.line.time
             and t.line.time < first.line.time]
    if early:
        # The collective timed out before anything named a cause: the later signature is not the cause.
        t = min(early, key=lambda h: h.order)
        return Verdict("nccl_watchdog_timeout", "unknown", 0.45,
                       f"{t.name} before any cause (first cause seen later: {first.name}): "
                       f"line {t.line.index + 1}: {_short(t.line.raw)}",
                       _hosts(early), _gpus(early), xids, signatures)
    category = first.category
    lost = _devices_lost_with(first, hits)
    if category in ("faulty_gpu", "nic") and len(lost) >= 2:
        # Several devices gone at the same moment on one host: what they share (PCIe switch, riser) failed.
        return Verdict("io_expansion_board", COMPONENT_OF["io_expansion_board"], 0.7,
                       f"{len(lost)} PCIe devices lost at once ({', '.join(sorted(lost))}): line "
                       f"{first.line.index + 1}: {_short(first.line.raw)}",
                       (first.line.host,) if first.line.host else (), _gpus([first]), xids, signatures)
    drives = _drives_lost_with(first, hits) if category == "ssd" else set()
    if len(drives) >= 2:
        # Several drives gone at the same moment on one host: the drive backplane they share failed.
        return Verdict("server_chassis", COMPONENT_OF["server_chassis"], 0.75,
                       f"{len(drives)} NVMe drives lost at once (nvme{', nvme'.join(sorted(drives))}): line "
                       f"{first.line.index + 1}: {_short(first.line.raw)}",
                       (first.line.host,) if first.line.host else (), (), xids, signatures)
    decided = [h for h in causes if h.category == category]
    rivals = [h for h in causes if h.category != category and _same_moment(first, h)
              and (category, h.category) not in REFINES and (h.category, category) not in REFINES]
    confidence = max(h.strength for h in decided) + 0.03 * (len({h.name for h in decided}) - 1)
    if rivals:
        confidence *= 0.85
    confidence = min(0.99, confidence)
    same = [h for h in hits if h.category == category and h.role != "timeout" and not _replay_report(h)]
    culprit = _replica_host(first, ordered) if _replay_report(first) else first.line.host
    hosts = tuple(dict.fromkeys(([culprit] if culprit else []) + list(_hosts(same))))
    return Verdict(category, COMPONENT_OF[category], confidence,
                   f"{first.name}: line {first.line.index + 1}: {_short(first.line.raw)}",
                   hosts, _gpus([first]) or _gpus(decided), xids, signatures)
