"""Classify an interruption's evidence into the Llama 3 taxonomy with explicit rules.

Every rule is a real signature of its category: NVIDIA Xid codes (NVIDIA's Xid
catalog), NCCL and InfiniBand errors, kernel messages (MCE, EDAC, NVMe, PCIe
AER, mlx5), BMC/IPMI SEL events, Python tracebacks and OOMs, watchdog
timeouts, SDC-check results and maintenance notices. Each rule has a strength:
a decisive hardware signature outranks the symptoms it causes downstream (the
NCCL watchdog timeout and the Python traceback that follow a GPU falling off
the bus), and application Xids (13, 31, 43) count as software unless hardware
evidence is present. Evidence with no decisive signature stays `unknown`.
The verdict names the line that decided it.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from orchestrator.taxonomy import COMPONENT_OF

XID_RE = re.compile(r"\bXid\b[^:\n]*?(?:\(PCI:(?P<pci>[0-9a-fA-F:.]+)\))?[^:\n]*:\s*(?P<code>\d{1,3})\b")
GPU_INDEX_RE = re.compile(r"\bGPU[ _#:]?(?:index[ =:]*)?(?P<idx>\d{1,2})\b", re.IGNORECASE)
HOST_RE = re.compile(r"\b(?:host(?:name)?|node)[=: ]+(?P<host>[A-Za-z][\w.-]{1,62})", re.IGNORECASE)

XID_CATEGORY: dict[int, tuple[str, float, str]] = {
    79: ("faulty_gpu", 0.95, "GPU has fallen off the bus"),
    74: ("faulty_gpu", 0.85, "NVLink error"),
    61: ("faulty_gpu", 0.85, "internal micro-controller breakpoint/warning"),
    62: ("faulty_gpu", 0.9, "internal micro-controller halt"),
    154: ("faulty_gpu", 0.9, "GPU recovery action: reset or reboot required"),
    48: ("gpu_hbm3_memory", 0.95, "double-bit ECC error"),
    63: ("gpu_hbm3_memory", 0.8, "row-remapping (page retirement) event"),
    64: ("gpu_hbm3_memory", 0.95, "row-remapping failure"),
    94: ("gpu_hbm3_memory", 0.9, "contained ECC memory error"),
    95: ("gpu_hbm3_memory", 0.95, "uncontained ECC memory error"),
    92: ("gpu_sram_memory", 0.8, "excessive single-bit ECC interrupts"),
    119: ("gpu_system_processor", 0.95, "GSP RPC timeout"),
    120: ("gpu_system_processor", 0.95, "GSP error"),
    13: ("software_bug", 0.55, "graphics engine exception (usually an application fault)"),
    31: ("software_bug", 0.55, "GPU memory page fault (usually an application bug)"),
    43: ("software_bug", 0.5, "GPU stopped processing (application fault)"),
}


@dataclass(frozen=True, slots=True)
class Rule:
    category: str
    strength: float
    pattern: re.Pattern[str]
    name: str


def _r(category: str, strength: float, name: str, *patterns: str) -> list[Rule]:
    return [Rule(category, strength, re.compile(p, re.IGNORECASE), name) for p in patterns]


RULES: list[Rule] = [
    # --- GPU --------------------------------------------------------------------------
    *_r("faulty_gpu", 0.95, "GPU lost", r"fallen off the bus", r"GPU (?:is )?lost\b", r"NVML_ERROR_GPU_IS_LOST",
        r"Unable to determine the device handle for GPU", r"GPU requires reset", r"GPU .* is unreachable",
        r"nvidia-smi has failed because it couldn't communicate with the NVIDIA driver"),
    *_r("faulty_gpu", 0.85, "NVLink failure", r"NVLink.{0,40}(?:error|down|inactive|fail)",
        r"DCGM_FR_NVLINK_DOWN", r"DCGM_FR_NVLINK_ERROR"),
    *_r("faulty_gpu", 0.85, "PCIe fatal error on a GPU",
        r"AER:.{0,80}(?:Uncorrected|Fatal).{0,120}(?:NVIDIA|3D controller|GPU)",
        r"(?:NVIDIA|3D controller|GPU).{0,120}AER:.{0,40}(?:Uncorrected|Fatal)"),
    *_r("faulty_gpu", 0.8, "DCGM diagnostic failure", r"dcgmi diag.{0,80}\bFail", r"DCGM_FR_(?:FAULTY|PCI_REPLAY|PCIE)"),
    *_r("gpu_hbm3_memory", 0.9, "uncorrectable HBM/DRAM ECC",
        r"^(?!.*(?:SRAM|DIMM|EDAC)).*(?:double[- ]bit|uncorrectable|DBE).{0,40}ECC",
        r"^(?!.*(?:SRAM|DIMM|EDAC)).*ECC.{0,40}(?:double[- ]bit|uncorrectable|DBE)",
        r"row[- ]?remap(?:ping)?.{0,30}(?:fail|pending|event)", r"remapped rows?.{0,30}(?:fail|pending)",
        r"DCGM_FR_(?:ROW_REMAP|VOLATILE_DBE|RETIRED_PAGES)", r"page retirement", r"retired pages?.{0,20}(?:limit|exceed)",
        r"\bHBM\b.{0,40}(?:error|fail)", r"uncorrectable ECC error encountered"),
    *_r("gpu_sram_memory", 0.92, "SRAM ECC/parity error",
        r"SRAM.{0,50}(?:ECC|parity|uncorrectable|error|threshold)",
        r"(?:ECC|parity|uncorrectable).{0,50}SRAM", r"DCGM_FR_SRAM_THRESHOLD"),
    *_r("gpu_system_processor", 0.92, "GSP firmware failure",
        r"\bGSP\b.{0,40}(?:timeout|timed out|error|fail|crash|RPC)", r"gsp_rpc", r"GSP firmware"),
    *_r("gpu_thermal_interface_sensor", 0.88, "GPU thermal/sensor fault",
        r"(?:GPU|HBM|memory).{0,40}(?:over[- ]?temperature|thermal (?:violation|slowdown|shutdown|throttl))",
        r"(?:HW|hardware) (?:thermal )?slowdown", r"clocks_(?:throttle|event)_reasons?\.hw_thermal",
        r"DCGM_FR_(?:TEMP_VIOLATION|CLOCK_THROTTLE_THERMAL|THERMAL)", r"thermal (?:sensor|interface).{0,40}(?:fail|error|invalid|read)",
        r"GPU temperature.{0,40}(?:exceed|critical|above)", r"temperature sensor.{0,40}(?:fail|error|reading)"),
    *_r("silent_data_corruption", 0.93, "silent data corruption check",
        r"silent data corruption", r"\bSDC\b.{0,40}(?:detect|fail|mismatch|found)",
        r"(?:checksum|hash|fingerprint).{0,40}mismatch.{0,60}(?:replica|rank|gradient|param)",
        r"(?:replica|rank)s?.{0,60}(?:disagree|differ|diverge).{0,60}(?:checksum|bitwise|result|gradient)",
        r"sdc[-_ ]check.{0,40}(?:fail|mismatch)"),
    # --- host -------------------------------------------------------------------------
    *_r("system_memory", 0.9, "host memory (EDAC/MCE) error",
        r"EDAC.{0,60}(?:UE|CE|uncorrect|correctable).{0,60}memory", r"EDAC MC\d+:.{0,80}(?:error|UE)",
        r"(?:Memory|DIMM).{0,60}(?:Uncorrectable ECC|uncorrectable error|failed|Correctable ECC logging limit)",
        r"mce:.{0,80}(?:Memory|DRAM|DIMM)", r"Machine Check.{0,80}(?:memory|DIMM)"),
    *_r("cpu", 0.88, "CPU machine check",
        r"mce:.{0,40}Hardware Error.{0,60}CPU", r"Machine Check (?:Exception|Event).{0,80}(?:CPU|Processor|Bank)",
        r"\b(?:CATERR|IERR)\b", r"Processor.{0,40}(?:IERR|Thermal Trip|Machine Check|Configuration Error)",
        r"CPU\d*.{0,40}(?:internal parity|lockup|Machine Check)"),
    *_r("ssd", 0.88, "NVMe/SSD failure",
        r"nvme\d*n?\d*.{0,80}(?:I/O error|timeout|controller is down|reset controller|failed|Device not ready)",
        r"(?:blk_update_request|Buffer I/O error).{0,60}(?:nvme|sd[a-z])", r"EXT4-fs error.{0,60}(?:nvme|sd[a-z])",
        r"(?:SMART|critical warning).{0,60}(?:fail|spare|wear|media)", r"\bSSD\b.{0,40}(?:fail|error|worn)",
        r"critical medium error"),
    *_r("power_supply", 0.9, "power supply event",
        r"Power Supply.{0,60}(?:Failure|AC lost|Predictive|fault|Redundancy Lost|input lost)",
        r"\bPSU\d*\b.{0,60}(?:fail|fault|lost|AC)", r"Power Unit.{0,40}Redundancy Lost"),
    *_r("server_chassis", 0.85, "chassis/fan/baseboard event",
        r"Chassis Intru", r"\bFan\d*\b.{0,60}(?:fail|Lower Critical|Redundancy Lost|not present|stopped)",
        r"(?:baseboard|motherboard|system board).{0,60}(?:fail|fault|error)", r"chassis.{0,40}(?:fault|fail|error)"),
    *_r("io_expansion_board", 0.88, "PCIe switch / IO board error",
        r"(?:PCIe|PCI) (?:switch|bridge).{0,100}(?:error|fail|down|Uncorrected)",
        r"\b(?:PEX|PLX)\d*\b.{0,80}(?:error|fail|link down|Uncorrected)", r"IO expansion (?:board|module)",
        r"\bretimer\b.{0,60}(?:fail|error)", r"PCIe Bridge.{0,60}(?:AER|Uncorrected|Fatal)"),
    *_r("nic", 0.88, "NIC (mlx5/HCA) failure",
        r"mlx5_core.{0,100}(?:health (?:poll )?fail|health compromised|Fatal|firmware (?:fatal|error)|cmd_work_handler|"
        r"internal error|PCI (?:slot|device).{0,20}(?:removed|error)|assert)",
        r"\b(?:HCA|ConnectX|NIC)\b.{0,60}(?:fail|fatal|not responding|firmware error|reset)",
        r"ibv_(?:open_device|create_qp|reg_mr).{0,40}fail", r"DCGM_FR_CONNECTX"),
    # --- network ----------------------------------------------------------------------
    *_r("network_switch_cable", 0.86, "link/switch/cable fault",
        r"(?:Physical )?link (?:state )?(?:changed to |went |is )?(?:down|DOWN|Polling)", r"\blink (?:flap|down)\b",
        r"port.{0,40}state.{0,10}(?:DOWN|INIT)", r"(?:LinkDowned|symbol errors?|link integrity).{0,40}\d+",
        r"transport retry counter exceeded", r"status=12\b", r"\bIBV_WC_RETRY_EXC_ERR\b",
        r"\b(?:switch|cable|transceiver|optic)\b.{0,60}(?:fail|down|error|fault|unplug|flap)",
        r"NET/IB.{0,80}(?:remote access error|retry|timeout|link)", r"Subnet Manager.{0,40}(?:lost|down|sweep)"),
    # --- maintenance, dependencies, software ----------------------------------------------
    *_r("host_maintenance", 0.85, "host maintenance",
        r"maintenance (?:event|window|notice|mode|reboot|scheduled|started|in progress)",
        r"(?:drain|cordon)(?:ed|ing)?.{0,60}maintenance", r"host (?:is )?(?:being )?(?:migrated|rebooted) for maintenance",
        r"kernel (?:upgrade|update|patch).{0,40}(?:reboot|restart)", r"firmware update.{0,40}(?:reboot|scheduled)",
        r"Reason=.{0,20}maint", r"terminated.{0,40}maintenance"),
    *_r("dependency", 0.8, "external dependency failure",
        r"ModuleNotFoundError", r"ImportError:", r"version mismatch", r"Driver/library version mismatch",
        r"NFS server .{0,40}not responding", r"(?:Lustre|GPFS|Weka|object store|S3|storage).{0,60}"
        r"(?:unavailable|timeout|timed out|not responding|error 5\d\d|Connection refused)",
        r"cannot open shared object file", r"undefined symbol:", r"(?:pip|conda).{0,30}(?:conflict|ResolutionImpossible)",
        r"(?:scheduler|SLURM|kube-apiserver|etcd|metadata server).{0,60}(?:unavailable|unreachable|timeout)"),
    *_r("software_bug", 0.75, "application error",
        r"CUDA out of memory", r"OutOfMemoryError", r"Out of memory: Killed process",
        r"^\s*(?:\[rank\d+\]:\s*)?(?!.*(?:Timed out|timed out|timeout|Watchdog|NCCL error|DistBackendError))"
        r"(?:RuntimeError|ValueError|TypeError|KeyError|IndexError|AssertionError|"
        r"AttributeError|ZeroDivisionError|NotImplementedError|FloatingPointError|NameError):",
        r"(?:loss|gradient|grad norm).{0,40}(?:is )?(?:NaN|nan|inf)\b", r"illegal memory access",
        r"device-side assert", r"Segmentation fault", r"core dumped"),
    *_r("nccl_watchdog_timeout", 0.5, "collective watchdog timeout",
        r"Watchdog caught collective operation timeout", r"ProcessGroupNCCL.{0,60}(?:timeout|timed out|watchdog)",
        r"NCCL.{0,40}(?:timeout|timed out|watchdog)", r"collective operation timeout",
        r"Timed out waiting \d+ms for (?:recv|send)", r"heartbeat monitor.{0,40}(?:timeout|hang)"),
]


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

    def to_dict(self) -> dict[str, Any]:
        return {"category": self.category, "component": self.component, "confidence": round(self.confidence, 3),
                "explanation": self.explanation, "hosts": list(self.hosts), "gpus": list(self.gpus),
                "xids": list(self.xids), "signatures": list(self.signatures)}


@dataclass(frozen=True, slots=True)
class _Hit:
    category: str
    strength: float
    name: str
    line: str
    lineno: int


def _xid_hits(lines: list[str]) -> list[_Hit]:
    hits = []
    for n, line in enumerate(lines):
        for m in XID_RE.finditer(line):
            code = int(m.group("code"))
            if code in XID_CATEGORY:
                cat, strength, what = XID_CATEGORY[code]
                hits.append(_Hit(cat, strength, f"Xid {code} ({what})", line.strip(), n))
    return hits


def _rule_hits(lines: list[str]) -> list[_Hit]:
    hits = []
    for n, line in enumerate(lines):
        for rule in RULES:
            if rule.pattern.search(line):
                hits.append(_Hit(rule.category, rule.strength, rule.name, line.strip(), n))
    return hits


def classify(text: str, *, kind: str | None = None, exit_signals: Iterable[str] = ()) -> Verdict:
    """Classify free-text evidence (logs, kernel messages, SEL) plus what the controller observed.

    Args:
        text: the evidence: log tails, dmesg, BMC events, check results.
        kind: the Finding kind that interrupted training (crash, hang, node_lost, ...), if any.
        exit_signals: signals the ranks died of.
    """
    lines = text.splitlines()
    hits = _xid_hits(lines) + _rule_hits(lines)
    xids = tuple(sorted({int(m.group("code")) for ln in lines for m in XID_RE.finditer(ln)}))
    gpus = tuple(sorted({int(m.group("idx")) for h in hits for m in GPU_INDEX_RE.finditer(h.line)}))
    hosts = tuple(dict.fromkeys(m.group("host") for h in hits for m in HOST_RE.finditer(h.line)))
    hardware = [h for h in hits if COMPONENT_OF[h.category] in ("gpu", "host", "network")]
    if hardware:
        # Application Xids are software only when nothing else points at hardware.
        hits = [h for h in hits if not (h.category == "software_bug" and h.name.startswith("Xid"))]
    if not hits:
        if kind == "hang":
            return Verdict("nccl_watchdog_timeout", "unknown", 0.4,
                           "no progress until the hang watchdog fired, and no signature of a cause", hosts, gpus, xids)
        why = f" (ranks died of {', '.join(sorted(set(exit_signals)))})" if exit_signals else ""
        return Verdict("unknown", "unknown", 0.0, f"no decisive signature in the evidence{why}", hosts, gpus, xids)
    scores: dict[str, float] = {}
    best: dict[str, _Hit] = {}
    for h in hits:
        # Strongest signature decides; repeated independent signatures add a little confidence.
        prev = scores.get(h.category, 0.0)
        scores[h.category] = max(prev, h.strength) + (0.02 if prev else 0.0)
        if h.category not in best or h.strength > best[h.category].strength:
            best[h.category] = h
    category = max(scores, key=lambda c: (scores[c], -best[c].lineno))
    top = best[category]
    runner_up = max((s for c, s in scores.items() if c != category), default=0.0)
    confidence = min(0.99, scores[category]) * (0.85 if scores[category] - runner_up < 0.05 else 1.0)
    line = top.line if len(top.line) <= 160 else top.line[:157] + "..."
    return Verdict(category, COMPONENT_OF[category], confidence,
                   f"{top.name}: line {top.lineno + 1}: {line}", hosts, gpus, xids,
                   tuple(dict.fromkeys(h.name for h in hits)))
