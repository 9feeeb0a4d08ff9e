"""The probes a node agent runs, and what a failed probe means for the controller (a BAD_GPU finding)."""

from __future__ import annotations

import os
from pathlib import Path

from health.observations import Finding, FindingKind
from health.probes.base import Probe, ProbeResult, Severity
from health.probes.gpu import FakeNvml, GpuProbe, NvmlAdapter, PynvmlAdapter
from health.probes.host import EdacProbe, IpmiSelProbe, KernelLogProbe, StorageProbe

ENV_FAKE_NVML = "ORCHESTRATOR_FAKE_NVML"
"""`1`: the GPU probe reads a fake NVML from files under the run folder (hosts without GPUs; fault injection)."""


def fake_nvml_dir(run_dir: str | Path, node_id: str) -> Path:
    """Where the fake NVML of one host (Ray node) keeps its recorded state and injected Xids."""
    return Path(run_dir) / "fake-nvml" / node_id


def nvml_adapter(run_dir: str | Path | None, node_id: str) -> NvmlAdapter:
    if os.environ.get(ENV_FAKE_NVML) == "1" and run_dir is not None:
        return FakeNvml(fake_nvml_dir(run_dir, node_id))
    return PynvmlAdapter()


def host_probes(*, adapter: NvmlAdapter, checkpoint_dir: str | Path | None, since: float) -> list[Probe]:
    probes: list[Probe] = [GpuProbe(adapter), KernelLogProbe(since), EdacProbe(), IpmiSelProbe(since)]
    if checkpoint_dir is not None:
        probes.append(StorageProbe(checkpoint_dir))
    return probes


def bad_gpu_finding(results: list[ProbeResult], host: str, now: float, ranks: tuple[int, ...] = ()) -> Finding | None:
    """A BAD_GPU finding naming the host (and GPU) when any probe result is a `fail`; None otherwise."""
    failed = [r for r in results if r.severity is Severity.FAIL]
    if not failed:
        return None
    first = min(failed, key=lambda r: r.at)
    gpu = f" GPU {first.gpu}" if first.gpu is not None else ""
    return Finding(FindingKind.BAD_GPU, ranks, (host,), first.at, now,
                   f"bad GPU/host: host={host}{gpu}: {first.message}"
                   + (f" (+{len(failed) - 1} more)" if len(failed) > 1 else ""),
                   evidence={"probes": [r.to_dict() for r in results if r.severity is not Severity.OK]})
