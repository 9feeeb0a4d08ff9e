"""The GPU probe: NVML's view of every GPU on the host, behind an adapter.

`NvmlAdapter` is what the probe reads: one `GpuState` per GPU and the Xid
events since the last read. `PynvmlAdapter` reads the real driver through
nvidia-ml-py (the optional `gpu` extra); `FakeNvml` is fed recorded values
from files, which is how the probe's logic is tested and how `orchestrator
chaos xid` injects an Xid on a host without a GPU (it appends to the file the
fake reads). Without NVML the probe says "not available" at severity ok.

Severities follow what large clusters drain a node for at once: a GPU gone,
an uncorrectable ECC error, a failed or pending row remap, NVLink down and the
driver asking for a reset are `fail`; a degraded PCIe link, HW thermal
slowdown and application Xids are `warn`.
"""

from __future__ import annotations

import json
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from health.probes.base import ProbeResult, Severity

NAME = "gpu"
TIMEOUT_S = 10.0

XID_FAIL: dict[int, str] = {
    79: "GPU has fallen off the bus",
    74: "NVLink error",
    48: "double-bit ECC error (DBE)",
    63: "row remapping event: ECC page retirement or row remapping recorded",
    64: "row remapping failure",
    94: "contained ECC memory error",
    95: "uncontained ECC memory error",
    119: "GSP RPC timeout",
    120: "GSP error",
    61: "internal micro-controller breakpoint/warning",
    62: "internal micro-controller halt",
    154: "GPU recovery action changed: reset or reboot required",
}
"""Xids that take a GPU out (their wording as in NVIDIA's Xid catalog)."""
XID_CORRECTED = {92: "high single-bit ECC error rate (corrected)"}
XID_APPLICATION = {13: "graphics engine exception", 31: "GPU memory page fault", 43: "GPU stopped processing"}

CLOCK_HW_SLOWDOWN = 0x8
CLOCK_SW_THERMAL = 0x20
CLOCK_HW_THERMAL = 0x40
CLOCK_HW_POWER_BRAKE = 0x80
RECOVERY_ACTIONS = {0: "none", 1: "GPU reset", 2: "node reboot", 3: "drain peer-to-peer", 4: "drain and reset"}
TEMPERATURE_LIMIT_C = 90.0


@dataclass(frozen=True, slots=True)
class XidEvent:
    gpu: int
    code: int
    at: float
    pci: str = ""


@dataclass(frozen=True, slots=True)
class GpuState:
    """One GPU's counters and state as NVML reports them; None where NVML does not offer a value."""

    index: int
    pci: str = ""
    lost: bool = False
    """NVML_ERROR_GPU_IS_LOST (or no handle at all)."""
    ecc_volatile: dict[str, int] = field(default_factory=dict)
    """dram_uncorrected, dram_corrected, sram_uncorrected, sram_corrected since the last driver load."""
    ecc_aggregate: dict[str, int] = field(default_factory=dict)
    """The same counters over the GPU's lifetime."""
    retired_pages: dict[str, int] = field(default_factory=dict)
    """single_bit, double_bit, pending (0/1)."""
    remapped_rows: dict[str, int] = field(default_factory=dict)
    """correctable, uncorrectable, pending (0/1), failed (0/1)."""
    temperature_c: float | None = None
    clock_event_reasons: int | None = None
    power_w: float | None = None
    power_limit_w: float | None = None
    pcie: dict[str, int] = field(default_factory=dict)
    """width, max_width, gen, max_gen."""
    nvlink: tuple[bool, ...] = ()
    """Active state of each NVLink the GPU has."""
    recovery_action: int | None = None

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> GpuState:
        d = dict(d)
        d["nvlink"] = tuple(bool(x) for x in d.get("nvlink", ()))
        return cls(**d)


class NvmlAdapter(Protocol):
    def unavailable(self) -> str | None:
        """Why NVML cannot be read here, or None when it can."""
        ...

    def gpus(self) -> list[GpuState]: ...

    def xid_events(self) -> list[XidEvent]:
        """Xid events since the previous call (each reported once)."""
        ...


class FakeNvml:
    """NVML fed from files: `gpus.json` (a list of GpuState dicts) and `xid.jsonl` (one event a line).

    Both are re-read on each call, so a recorded state can be swapped and an
    Xid appended (by `orchestrator chaos xid`) while the probe runs.
    """

    def __init__(self, folder: str | Path) -> None:
        self.folder = Path(folder)
        self._seen = 0
        self._lock = threading.Lock()

    def unavailable(self) -> str | None:
        return None

    def gpus(self) -> list[GpuState]:
        try:
            raw = json.loads((self.folder / "gpus.json").read_text())
        except FileNotFoundError:
            return []
        return [GpuState.from_dict(g) for g in raw]

    def xid_events(self) -> list[XidEvent]:
        try:
            lines = (self.folder / "xid.jsonl").read_text().splitlines()
        except FileNotFoundError:
            return []
        with self._lock:
            new, self._seen = lines[self._seen:], len(lines)
        out = []
        for line in new:
            if line.strip():
                e = json.loads(line)
                out.append(XidEvent(int(e["gpu"]), int(e["code"]), float(e.get("at") or time.time()),
                                    e.get("pci", "")))
        return out


def inject_xid(folder: str | Path, code: int, gpu: int = 0, pci: str = "") -> dict[str, Any]:
    """Append one Xid event for `FakeNvml` to report (the fault-injection path)."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    event = {"gpu": gpu, "code": code, "at": time.time(), "pci": pci}
    with open(folder / "xid.jsonl", "a") as f:
        f.write(json.dumps(event) + "\n")
    return event


class PynvmlAdapter:
    """The real driver through nvidia-ml-py. Every call that NVML does not support on a GPU is skipped."""

    def __init__(self) -> None:
        self._error: str | None = None
        self._events: Any = None
        self._lock = threading.Lock()
        try:
            import pynvml

            pynvml.nvmlInit()
            self.nv = pynvml
        except Exception as e:  # no package, no driver, no GPU
            self._error = f"{type(e).__name__}: {e}"
            return
        try:
            self._events = pynvml.nvmlEventSetCreate()
            for i in range(pynvml.nvmlDeviceGetCount()):
                h = pynvml.nvmlDeviceGetHandleByIndex(i)
                try:
                    pynvml.nvmlDeviceRegisterEvents(h, pynvml.nvmlEventTypeXidCriticalError, self._events)
                except pynvml.NVMLError:
                    pass
        except Exception:
            self._events = None

    def unavailable(self) -> str | None:
        return self._error

    def _try(self, fn: Any, *args: Any) -> Any:
        try:
            return fn(*args)
        except Exception:
            return None

    def gpus(self) -> list[GpuState]:
        nv = self.nv
        out = []
        for i in range(nv.nvmlDeviceGetCount()):
            try:
                h = nv.nvmlDeviceGetHandleByIndex(i)
            except nv.NVMLError as e:
                out.append(GpuState(i, lost=True, pci=str(e)))
                continue
            pci = self._try(nv.nvmlDeviceGetPciInfo, h)
            out.append(GpuState(
                index=i, pci=_text(pci.busId) if pci is not None else "",
                ecc_volatile=self._ecc(h, nv.NVML_VOLATILE_ECC), ecc_aggregate=self._ecc(h, nv.NVML_AGGREGATE_ECC),
                retired_pages=self._retired(h), remapped_rows=self._remap(h),
                temperature_c=self._try(nv.nvmlDeviceGetTemperature, h, nv.NVML_TEMPERATURE_GPU),
                clock_event_reasons=self._try(getattr(nv, "nvmlDeviceGetCurrentClocksEventReasons", None)
                                              or nv.nvmlDeviceGetCurrentClocksThrottleReasons, h),
                power_w=_milli(self._try(nv.nvmlDeviceGetPowerUsage, h)),
                power_limit_w=_milli(self._try(nv.nvmlDeviceGetEnforcedPowerLimit, h)),
                pcie={k: v for k, v in (("width", self._try(nv.nvmlDeviceGetCurrPcieLinkWidth, h)),
                                        ("max_width", self._try(nv.nvmlDeviceGetMaxPcieLinkWidth, h)),
                                        ("gen", self._try(nv.nvmlDeviceGetCurrPcieLinkGeneration, h)),
                                        ("max_gen", self._try(nv.nvmlDeviceGetMaxPcieLinkGeneration, h)))
                      if v is not None},
                nvlink=self._nvlink(h), recovery_action=self._recovery(h)))
        return out

    def _ecc(self, h: Any, counter: int) -> dict[str, int]:
        nv = self.nv
        out = {}
        for where, loc in (("dram", getattr(nv, "NVML_MEMORY_LOCATION_DRAM", 6)),
                           ("sram", getattr(nv, "NVML_MEMORY_LOCATION_SRAM", 7))):
            for kind, err in (("uncorrected", nv.NVML_MEMORY_ERROR_TYPE_UNCORRECTED),
                              ("corrected", nv.NVML_MEMORY_ERROR_TYPE_CORRECTED)):
                v = self._try(nv.nvmlDeviceGetMemoryErrorCounter, h, err, counter, loc)
                if v is not None:
                    out[f"{where}_{kind}"] = int(v)
        return out

    def _retired(self, h: Any) -> dict[str, int]:
        nv = self.nv
        out = {}
        for name, cause in (("single_bit", 0), ("double_bit", 1)):
            pages = self._try(nv.nvmlDeviceGetRetiredPages, h, cause)
            if pages is not None:
                out[name] = len(pages)
        pending = self._try(nv.nvmlDeviceGetRetiredPagesPendingStatus, h)
        if pending is not None:
            out["pending"] = int(pending)
        return out

    def _remap(self, h: Any) -> dict[str, int]:
        r = self._try(self.nv.nvmlDeviceGetRemappedRows, h)
        if r is None:
            return {}
        corr, unc, pending, failed = r
        return {"correctable": int(corr), "uncorrectable": int(unc), "pending": int(pending), "failed": int(failed)}

    def _nvlink(self, h: Any) -> tuple[bool, ...]:
        nv = self.nv
        states = []
        for link in range(getattr(nv, "NVML_NVLINK_MAX_LINKS", 18)):
            s = self._try(nv.nvmlDeviceGetNvLinkState, h, link)
            if s is None:
                continue
            states.append(bool(s))
        return tuple(states)

    def _recovery(self, h: Any) -> int | None:
        nv = self.nv
        fid = getattr(nv, "NVML_FI_DEV_GET_GPU_RECOVERY_ACTION", None)
        if fid is None:
            return None
        vals = self._try(nv.nvmlDeviceGetFieldValues, h, [fid])
        if not vals or vals[0].nvmlReturn != 0:
            return None
        return int(vals[0].value.uiVal)

    def xid_events(self) -> list[XidEvent]:
        nv = self.nv
        if self._events is None:
            return []
        out = []
        with self._lock:
            while True:
                try:
                    data = nv.nvmlEventSetWait_v2(self._events, 0)
                except nv.NVMLError:
                    break  # NVML_ERROR_TIMEOUT: nothing more
                idx = self._try(nv.nvmlDeviceGetIndex, data.device)
                out.append(XidEvent(-1 if idx is None else int(idx), int(data.eventData), time.time()))
        return out


def _text(v: Any) -> str:
    return v.decode() if isinstance(v, bytes) else str(v)


def _milli(v: Any) -> float | None:
    return None if v is None else float(v) / 1000.0


def evaluate(state: GpuState, host: str = "") -> list[ProbeResult]:
    """What one GPU's state means: ok, warn or fail results worded as NVML and the driver word them."""
    g = state.index

    def res(sev: Severity, msg: str) -> ProbeResult:
        return ProbeResult(NAME, sev, msg, host, g, "nvml")

    if state.lost:
        return [res(Severity.FAIL, f"GPU {g} ({state.pci}): NVML_ERROR_GPU_IS_LOST: GPU is lost")]
    out: list[ProbeResult] = []
    vol, agg = state.ecc_volatile, state.ecc_aggregate
    if vol.get("dram_uncorrected", 0) > 0:
        out.append(res(Severity.FAIL, f"GPU {g}: uncorrectable ECC error count on DRAM (HBM): volatile "
                                      f"{vol['dram_uncorrected']}, aggregate {agg.get('dram_uncorrected', 0)}"))
    if vol.get("sram_uncorrected", 0) > 0:
        out.append(res(Severity.FAIL, f"GPU {g}: uncorrectable SRAM ECC error count: volatile "
                                      f"{vol['sram_uncorrected']}, aggregate {agg.get('sram_uncorrected', 0)}"))
    rp, rr = state.retired_pages, state.remapped_rows
    if rr.get("failed"):
        out.append(res(Severity.FAIL, f"GPU {g}: row remapping failed (uncorrectable rows "
                                      f"{rr.get('uncorrectable', 0)})"))
    elif rr.get("pending"):
        out.append(res(Severity.FAIL, f"GPU {g}: row remapping pending: the GPU needs a reset "
                                      f"(uncorrectable rows {rr.get('uncorrectable', 0)})"))
    if rp.get("pending"):
        out.append(res(Severity.FAIL, f"GPU {g}: page retirement pending (double-bit ECC retired pages "
                                      f"{rp.get('double_bit', 0)})"))
    reasons = state.clock_event_reasons or 0
    if reasons & CLOCK_HW_THERMAL:
        out.append(res(Severity.WARN, f"GPU {g}: clocks_event_reasons.hw_thermal_slowdown active: HW thermal slowdown"
                                      f" at {state.temperature_c if state.temperature_c is not None else '?'} C"))
    elif reasons & CLOCK_HW_POWER_BRAKE:
        out.append(res(Severity.WARN, f"GPU {g}: HW power brake slowdown active"))
    if state.temperature_c is not None and state.temperature_c >= TEMPERATURE_LIMIT_C:
        out.append(res(Severity.WARN, f"GPU {g}: GPU temperature {state.temperature_c:g} C above "
                                      f"{TEMPERATURE_LIMIT_C:g} C"))
    pcie = state.pcie
    if pcie.get("width") and pcie.get("max_width") and pcie["width"] < pcie["max_width"]:
        out.append(res(Severity.WARN, f"GPU {g}: PCIe link width x{pcie['width']} below its maximum "
                                      f"x{pcie['max_width']} (gen {pcie.get('gen', '?')}/{pcie.get('max_gen', '?')})"))
    down = [i for i, up in enumerate(state.nvlink) if not up]
    if state.nvlink and down and len(down) < len(state.nvlink):
        out.append(res(Severity.FAIL, f"GPU {g}: NVLink inactive on links {down} of {len(state.nvlink)}"))
    if state.recovery_action:
        action = RECOVERY_ACTIONS.get(state.recovery_action, str(state.recovery_action))
        out.append(res(Severity.FAIL, f"GPU {g}: driver recommends recovery action: {action} "
                                      f"(GPU requires reset)" if state.recovery_action in (1, 4) else
                       f"GPU {g}: driver recommends recovery action: {action}"))
    if not out:
        power = (f", power {state.power_w:g}/{state.power_limit_w:g} W" if state.power_w is not None
                 and state.power_limit_w is not None else "")
        temp = f"{state.temperature_c:g} C" if state.temperature_c is not None else "temperature n/a"
        out.append(res(Severity.OK, f"GPU {g}: healthy ({temp}{power})"))
    return out


def evaluate_xid(e: XidEvent, host: str = "") -> ProbeResult:
    """An Xid in the driver's own wording (`NVRM: Xid (PCI:...): N, ...`)."""
    if e.code in XID_FAIL:
        sev, what = Severity.FAIL, XID_FAIL[e.code]
    elif e.code in XID_CORRECTED:
        sev, what = Severity.OK, XID_CORRECTED[e.code]
    else:
        sev, what = Severity.WARN, XID_APPLICATION.get(e.code, "driver error event")
    pci = e.pci or f"gpu{e.gpu}"
    return ProbeResult(NAME, sev, f"NVRM: Xid (PCI:{pci}): {e.code}, GPU {e.gpu}: {what}", host,
                       e.gpu if e.gpu >= 0 else None, "nvml", e.at)


class GpuProbe:
    """Every GPU's state plus the Xid events since the last run."""

    name = NAME

    def __init__(self, adapter: NvmlAdapter, timeout_s: float = TIMEOUT_S) -> None:
        self.adapter, self.timeout_s = adapter, timeout_s

    def run(self) -> list[ProbeResult]:
        why = self.adapter.unavailable()
        if why is not None:
            return [ProbeResult(NAME, Severity.OK, f"NVML not available: {why}", source="nvml")]
        out = [evaluate_xid(e) for e in self.adapter.xid_events()]
        for g in self.adapter.gpus():
            out.extend(evaluate(g))
        return out
