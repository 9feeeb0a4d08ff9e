"""The probe interface: a probe looks at one thing on this host and reports results with a severity.

Probes call into drivers, the kernel log and the BMC, any of which can block
for a long time on a sick host. Each probe therefore runs in its own thread
under its own time limit; a probe that does not answer in time is abandoned
(the thread is a daemon and is left behind) and reported as a `warn`, so one
hung `ipmitool` never stalls the agent or a preflight.
"""

from __future__ import annotations

import enum
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any, Protocol


class Severity(enum.StrEnum):
    OK = "ok"
    WARN = "warn"
    FAIL = "fail"


_RANK = {Severity.OK: 0, Severity.WARN: 1, Severity.FAIL: 2}


@dataclass(frozen=True, slots=True)
class ProbeResult:
    """One thing a probe found. `message` is a log-style line in the wording of its source."""

    probe: str
    severity: Severity
    message: str
    host: str = ""
    gpu: int | None = None
    source: str = ""
    """Where the message comes from: nvml, kernel, edac, ipmi-sel, storage, collective."""
    at: float = field(default_factory=time.time)
    """When it was observed (for kernel lines: when the kernel logged it), on this host's clock."""

    def line(self) -> str:
        """The evidence line the classifier reads: host and source fields first, then the message."""
        where = f"host={self.host}" + (f" gpu={self.gpu}" if self.gpu is not None else "")
        return f"{where} source={self.source or self.probe} severity={self.severity.value}: {self.message}"

    def to_dict(self) -> dict[str, Any]:
        return {"probe": self.probe, "severity": self.severity.value, "message": self.message, "host": self.host,
                "gpu": self.gpu, "source": self.source, "at": self.at}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ProbeResult:
        return cls(d["probe"], Severity(d["severity"]), d["message"], d.get("host", ""), d.get("gpu"),
                   d.get("source", ""), float(d.get("at") or 0.0))


class Probe(Protocol):
    name: str
    timeout_s: float

    def run(self) -> list[ProbeResult]: ...


def worst(results: Iterable[ProbeResult]) -> Severity:
    return max((r.severity for r in results), key=_RANK.__getitem__, default=Severity.OK)


def run_probe(probe: Probe, host: str, timeout_s: float | None = None) -> list[ProbeResult]:
    """Run one probe in a thread, abandoned after its time limit; an error or timeout becomes a `warn`."""
    limit = probe.timeout_s if timeout_s is None else min(timeout_s, probe.timeout_s)
    box: dict[str, Any] = {}

    def target() -> None:
        try:
            box["results"] = probe.run()
        except Exception as e:  # a probe's own bug or a driver error must not stop the others
            box["error"] = e

    t = threading.Thread(target=target, name=f"probe-{probe.name}", daemon=True)
    t.start()
    t.join(max(0.0, limit))
    if t.is_alive():
        return [ProbeResult(probe.name, Severity.WARN, f"probe {probe.name} did not answer within {limit:g} s",
                            host, source=probe.name)]
    if "error" in box:
        e = box["error"]
        return [ProbeResult(probe.name, Severity.WARN, f"probe {probe.name} could not run: {type(e).__name__}: {e}",
                            host, source=probe.name)]
    return [r if r.host else _with_host(r, host) for r in box.get("results", [])]


def run_probes(probes: Iterable[Probe], host: str, deadline_s: float | None = None) -> list[ProbeResult]:
    """Run probes concurrently, each under its own limit and all under `deadline_s`; results time-ordered."""
    probes = list(probes)
    out: dict[int, list[ProbeResult]] = {}

    def one(i: int, p: Probe) -> None:
        out[i] = run_probe(p, host, deadline_s)

    threads = [threading.Thread(target=one, args=(i, p), daemon=True) for i, p in enumerate(probes)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()  # run_probe returns within its limit
    return sorted((r for i in sorted(out) for r in out[i]), key=lambda r: r.at)


def _with_host(r: ProbeResult, host: str) -> ProbeResult:
    return ProbeResult(r.probe, r.severity, r.message, host, r.gpu, r.source, r.at)
