"""Host probes: checkpoint storage, the kernel log, EDAC counters and the BMC's event log.

Each reads through a small seam (a command runner, a sysfs root, a path) so
the tests feed recorded output from tests/fixtures/probes/. What a host cannot
offer (no journal access, no EDAC driver, no ipmitool) is reported as "not
available" at severity ok: a probe never fails a host for what it cannot see.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import time
import uuid
from collections.abc import Callable
from datetime import datetime
from pathlib import Path

from health.probes.base import ProbeResult, Severity
from health.probes.gpu import XID_CORRECTED, XID_FAIL

Runner = Callable[[list[str], float], str]
"""Runs a command with a time limit and returns its stdout; raises OSError/CalledProcessError/TimeoutExpired."""


def run_command(argv: list[str], timeout_s: float) -> str:
    return subprocess.run(argv, capture_output=True, text=True, timeout=timeout_s, check=True).stdout


class StorageProbe:
    """Free space on the checkpoint storage and a write-read-delete of a small file there."""

    name = "storage"

    def __init__(self, path: str | Path, min_free_bytes: int = 1 << 30, timeout_s: float = 10.0) -> None:
        self.path, self.min_free, self.timeout_s = Path(path), min_free_bytes, timeout_s

    def run(self) -> list[ProbeResult]:
        def res(sev: Severity, msg: str) -> ProbeResult:
            return ProbeResult(self.name, sev, msg, source="storage")

        try:
            self.path.mkdir(parents=True, exist_ok=True)
            usage = shutil.disk_usage(self.path)
        except OSError as e:
            return [res(Severity.FAIL, f"checkpoint storage {self.path} not usable: {e}")]
        out = []
        if usage.free < self.min_free:
            out.append(res(Severity.FAIL, f"checkpoint storage {self.path}: only {usage.free / 2**20:.0f} MiB free "
                                          f"(needs {self.min_free / 2**20:.0f} MiB): No space left for checkpoints"))
        probe = self.path / f".probe-{os.getpid()}-{uuid.uuid4().hex[:8]}"
        payload = os.urandom(4096)
        try:
            with open(probe, "wb") as f:
                f.write(payload)
                f.flush()
                os.fsync(f.fileno())
            if probe.read_bytes() != payload:
                out.append(res(Severity.FAIL, f"checkpoint storage {self.path}: write check read back other bytes"))
        except OSError as e:
            out.append(res(Severity.FAIL, f"checkpoint storage {self.path}: write check failed: {e}"))
        finally:
            try:
                probe.unlink(missing_ok=True)
            except OSError:
                pass
        if not out:
            out.append(res(Severity.OK, f"checkpoint storage {self.path}: {usage.free / 2**30:.1f} GiB free, "
                                        f"write check passed"))
        return out


# (source, severity, pattern): the first match decides a kernel line's severity.
_KERNEL_RULES: list[tuple[str, Severity, re.Pattern[str]]] = [
    (src, sev, re.compile(p, re.IGNORECASE)) for src, sev, p in (
        ("pcie-aer", Severity.OK, r"AER:.{0,80}Corrected error"),
        ("pcie-aer", Severity.FAIL, r"AER:.{0,120}(?:Uncorrected|Fatal)"),
        ("mce", Severity.FAIL, r"mce:.{0,40}\[Hardware Error\]|Machine check events logged|Machine Check Exception"),
        ("edac", Severity.OK, r"EDAC.{0,80}\b(?:CE|Corrected)\b"),
        ("edac", Severity.FAIL, r"EDAC.{0,80}(?:\bUE\b|Uncorrected|uncorrectable|Fatal)"),
        ("nvme", Severity.FAIL, r"nvme\d*(?:n\d+)?.{0,80}(?:I/O error|timeout|controller is down|resetting controller|"
                                r"Device not ready|failed)"),
        ("mlx5", Severity.FAIL, r"mlx5_core.{0,100}(?:health compromised|Fatal|firmware fatal|internal error|"
                                r"PCI slot .{0,20}removed)"),
        ("infiniband", Severity.WARN, r"(?:mlx5_\d+|ib\d*|infiniband).{0,80}(?:link (?:down|is down)|Physical link "
                                      r"down|port .{0,20}state.{0,10}DOWN)"),
        ("mlx5", Severity.WARN, r"mlx5_core.{0,100}(?:error|timeout)"),
    )]
_XID = re.compile(r"NVRM: Xid \([^)]*\): (?P<code>\d+)")
_UNIX_TS = re.compile(r"^(?P<ts>\d{9,11}\.\d+)\s+(?P<rest>.*)$")
_ISO_TS = re.compile(r"^(?P<ts>\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d)(?:[,.]\d+)?(?P<tz>[+-]\d\d:?\d\d)?\s+(?P<rest>.*)$")


def classify_kernel_line(line: str) -> tuple[str, Severity] | None:
    """(source, severity) of a kernel log line worth reporting, or None for an ordinary line."""
    m = _XID.search(line)
    if m:
        code = int(m.group("code"))
        return "xid", (Severity.FAIL if code in XID_FAIL else Severity.OK if code in XID_CORRECTED else Severity.WARN)
    for src, sev, pat in _KERNEL_RULES:
        if pat.search(line):
            return src, sev
    return None


def parse_kernel_log(text: str, since: float) -> list[ProbeResult]:
    """Lines of `journalctl -k -o short-unix` or `dmesg --time-format iso` since `since` that name a fault."""
    out = []
    for raw in text.splitlines():
        line = raw.strip()
        at: float | None = None
        m = _UNIX_TS.match(line)
        if m:
            at, line = float(m.group("ts")), m.group("rest")
        else:
            m = _ISO_TS.match(line)
            if m:
                stamp = m.group("ts") + (m.group("tz") or "+00:00")
                try:
                    at = datetime.fromisoformat(stamp).timestamp()
                except ValueError:
                    at = None
                line = m.group("rest")
        if at is not None and at < since:
            continue
        hit = classify_kernel_line(line)
        if hit is None:
            continue
        src, sev = hit
        out.append(ProbeResult("kernel_log", sev, line, source=f"kernel/{src}", at=at or time.time()))
    return out


class KernelLogProbe:
    """The kernel log since `since` (the job's start): journalctl -k, else dmesg, whichever works here."""

    name = "kernel_log"

    def __init__(self, since: float, runner: Runner = run_command, timeout_s: float = 10.0) -> None:
        self.since, self.runner, self.timeout_s = since, runner, timeout_s

    def commands(self) -> list[list[str]]:
        return [["journalctl", "-k", "--no-pager", "-q", "-o", "short-unix", f"--since=@{int(self.since)}"],
                ["dmesg", "--time-format", "iso"]]

    def run(self) -> list[ProbeResult]:
        errors = []
        for argv in self.commands():
            try:
                text = self.runner(argv, self.timeout_s / 2)
            except (OSError, subprocess.SubprocessError) as e:
                errors.append(f"{argv[0]}: {type(e).__name__}")
                continue
            return parse_kernel_log(text, self.since) or [
                ProbeResult(self.name, Severity.OK, f"kernel log ({argv[0]}): no hardware errors since the job "
                                                    f"started", source="kernel")]
        return [ProbeResult(self.name, Severity.OK, f"kernel log not available ({'; '.join(errors)})",
                            source="kernel")]


class EdacProbe:
    """Memory controllers' error counters in /sys/devices/system/edac/mc (reset at boot)."""

    name = "edac"

    def __init__(self, root: str | Path = "/sys/devices/system/edac", timeout_s: float = 5.0) -> None:
        self.root, self.timeout_s = Path(root), timeout_s

    def run(self) -> list[ProbeResult]:
        mcs = sorted((self.root / "mc").glob("mc[0-9]*")) if (self.root / "mc").is_dir() else []
        if not mcs:
            return [ProbeResult(self.name, Severity.OK, "EDAC counters not available (no EDAC driver loaded)",
                                source="edac")]
        out = []
        for mc in mcs:
            ue, ce = _read_int(mc / "ue_count"), _read_int(mc / "ce_count")
            if ue:
                out.append(ProbeResult(self.name, Severity.FAIL,
                                       f"EDAC {mc.name.upper()}: {ue} uncorrected memory errors (UE) on DIMMs "
                                       f"since boot", source="edac"))
            elif ce:
                out.append(ProbeResult(self.name, Severity.OK, f"EDAC {mc.name.upper()}: {ce} corrected errors",
                                       source="edac"))
        return out or [ProbeResult(self.name, Severity.OK, f"EDAC: {len(mcs)} memory controllers, no errors",
                                   source="edac")]


def _read_int(path: Path) -> int:
    try:
        return int(path.read_text().strip())
    except (OSError, ValueError):
        return 0


_SEL_FAIL = re.compile(
    r"Power Supply.*(?:Failure|AC lost|Power Supply AC lost|Predictive)|Uncorrectable ECC|Processor.*(?:IERR|"
    r"Thermal Trip|Machine Check)|Fan.*(?:Lower Critical|Non-recoverable)|Chassis Intru|Critical Interrupt.*"
    r"(?:PCI|Bus).*(?:Fatal|Uncorrectable)|Power Unit.*Redundancy Lost|Drive Fault", re.IGNORECASE)
_SEL_DATE = re.compile(r"\|\s*(?P<d>\d\d/\d\d/\d{4})\s*\|\s*(?P<t>\d\d:\d\d:\d\d)")


def parse_sel(text: str, since: float) -> list[ProbeResult]:
    """`ipmitool sel elist` entries since `since` that are asserted faults."""
    out = []
    for line in text.splitlines():
        if not line.strip() or "Deasserted" in line:
            continue
        m = _SEL_DATE.search(line)
        at = None
        if m:
            try:
                at = datetime.strptime(f"{m.group('d')} {m.group('t')}", "%m/%d/%Y %H:%M:%S").timestamp()
            except ValueError:
                at = None
        if at is not None and at < since:
            continue
        if _SEL_FAIL.search(line):
            out.append(ProbeResult("ipmi_sel", Severity.FAIL, f"ipmitool SEL: {line.strip()}", source="ipmi-sel",
                                   at=at or time.time()))
    return out


class IpmiSelProbe:
    """The BMC's system event log through `ipmitool sel elist`, where ipmitool exists."""

    name = "ipmi_sel"

    def __init__(self, since: float, runner: Runner = run_command, timeout_s: float = 15.0,
                 which: Callable[[str], str | None] = shutil.which) -> None:
        self.since, self.runner, self.timeout_s, self.which = since, runner, timeout_s, which

    def run(self) -> list[ProbeResult]:
        if self.which("ipmitool") is None:
            return [ProbeResult(self.name, Severity.OK, "IPMI SEL not available (no ipmitool)", source="ipmi-sel")]
        try:
            text = self.runner(["ipmitool", "sel", "elist"], self.timeout_s)
        except (OSError, subprocess.SubprocessError) as e:
            return [ProbeResult(self.name, Severity.OK, f"IPMI SEL not available ({type(e).__name__})",
                                source="ipmi-sel")]
        return parse_sel(text, self.since) or [
            ProbeResult(self.name, Severity.OK, "IPMI SEL: no faults since the job started", source="ipmi-sel")]
