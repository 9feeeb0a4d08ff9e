"""The probes' logic over recorded inputs (tests/fixtures/probes/): NVML through the fake adapter,
kernel log, EDAC, IPMI SEL, checkpoint storage, and the time limit every probe runs under."""

from __future__ import annotations

import shutil
import subprocess
import threading
import time
from datetime import datetime
from pathlib import Path

import pytest

from health.observations import FindingKind
from health.probes.base import ProbeResult, Severity, run_probe, run_probes, worst
from health.probes.gpu import FakeNvml, GpuProbe, PynvmlAdapter, inject_xid
from health.probes.host import EdacProbe, IpmiSelProbe, KernelLogProbe, StorageProbe
from health.probes.suite import bad_gpu_finding

FIX = Path(__file__).parent.parent / "fixtures" / "probes"
SINCE = 1_700_000_000.0  # 2023-11-14T22:13:20Z


def nvml(tmp: Path, gpus: str | None = None, xids: bool = False) -> FakeNvml:
    if gpus:
        shutil.copy(FIX / gpus, tmp / "gpus.json")
    if xids:
        shutil.copy(FIX / "xid.jsonl", tmp / "xid.jsonl")
    return FakeNvml(tmp)


def by_gpu(results: list[ProbeResult]) -> dict[int | None, list[ProbeResult]]:
    out: dict[int | None, list[ProbeResult]] = {}
    for r in results:
        out.setdefault(r.gpu, []).append(r)
    return out


def test_healthy_gpus_are_ok_whatever_their_corrected_counts(tmp_path: Path) -> None:
    results = GpuProbe(nvml(tmp_path, "nvml-healthy.json")).run()
    assert [(r.gpu, r.severity) for r in results] == [(0, Severity.OK), (1, Severity.OK)]
    assert "power 71.5/700 W" in results[0].message


def test_each_recorded_gpu_fault_gets_its_severity(tmp_path: Path) -> None:
    g = by_gpu(GpuProbe(nvml(tmp_path, "nvml-faults.json")).run())
    sev = {i: worst(rs) for i, rs in g.items()}
    assert sev == {0: Severity.FAIL, 1: Severity.FAIL, 2: Severity.WARN, 3: Severity.WARN, 4: Severity.FAIL,
                   5: Severity.FAIL, 6: Severity.FAIL, 7: Severity.FAIL, 8: Severity.FAIL}
    assert "uncorrectable ECC" in g[0][0].message and "aggregate 7" in g[0][0].message
    assert "row remapping pending" in g[1][0].message
    assert "hw_thermal_slowdown" in g[2][0].message and "93 C" in g[2][1].message
    assert "x8 below its maximum x16" in g[3][0].message
    assert "links [2] of 4" in g[4][0].message
    assert "GPU_IS_LOST" in g[5][0].message
    assert "SRAM" in g[6][0].message
    assert "node reboot" in g[7][0].message
    assert {"row remapping failed", "page retirement pending"} <= {m.message.split(": ", 1)[1].split(" (")[0]
                                                                   for m in g[8]}


def test_xid_events_are_reported_once_with_the_driver_wording(tmp_path: Path) -> None:
    adapter = nvml(tmp_path, xids=True)
    first = GpuProbe(adapter).run()
    assert [(r.gpu, r.severity) for r in first] == [(3, Severity.FAIL), (0, Severity.OK), (1, Severity.WARN)]
    assert first[0].message.startswith("NVRM: Xid (PCI:0000:3b:00): 79,") and first[0].at == 1700000100.0
    assert GpuProbe(adapter).run() == []  # consumed
    inject_xid(tmp_path, 48, gpu=2)
    [again] = GpuProbe(adapter).run()
    assert again.severity is Severity.FAIL and ": 48," in again.message and again.gpu == 2


def test_without_nvml_the_probe_says_not_available_and_ok() -> None:
    # pynvml missing, or present without a driver: both mean "not available".
    adapter = PynvmlAdapter()
    if adapter.unavailable() is None:
        pytest.skip("a real NVML is present here")
    [r] = GpuProbe(adapter).run()
    assert r.severity is Severity.OK and r.message.startswith("NVML not available")


def test_kernel_log_from_the_journal_since_the_job_started() -> None:
    text = (FIX / "journal-short-unix.txt").read_text()
    calls: list[list[str]] = []

    def runner(argv: list[str], timeout: float) -> str:
        calls.append(argv)
        return text

    results = KernelLogProbe(SINCE, runner).run()
    assert calls[0][:2] == ["journalctl", "-k"] and f"--since=@{int(SINCE)}" in calls[0]
    got = [(r.source, r.severity.value) for r in results]
    assert got == [("kernel/pcie-aer", "ok"), ("kernel/nvme", "fail"), ("kernel/edac", "ok"), ("kernel/edac", "fail"),
                   ("kernel/mlx5", "fail"), ("kernel/xid", "fail"), ("kernel/xid", "ok"), ("kernel/pcie-aer", "fail"),
                   ("kernel/mce", "fail"), ("kernel/infiniband", "warn")]
    assert results[1].at == pytest.approx(1700000002.25) and results[1].message.startswith("node-7 kernel: nvme")


def test_kernel_log_falls_back_to_dmesg_and_then_to_not_available() -> None:
    def no_journal(argv: list[str], timeout: float) -> str:
        if argv[0] == "journalctl":
            raise subprocess.CalledProcessError(1, argv)
        return (FIX / "dmesg-iso.txt").read_text()

    [r] = KernelLogProbe(SINCE, no_journal).run()
    assert r.severity is Severity.FAIL and ": 48," in r.message

    def nothing(argv: list[str], timeout: float) -> str:
        raise FileNotFoundError(argv[0])

    [r] = KernelLogProbe(SINCE, nothing).run()
    assert r.severity is Severity.OK and "not available" in r.message


def test_edac_counters(tmp_path: Path) -> None:
    assert EdacProbe(tmp_path / "none").run()[0].message.startswith("EDAC counters not available")
    for mc, ue, ce in (("mc0", 0, 12), ("mc1", 2, 0)):
        (tmp_path / "mc" / mc).mkdir(parents=True)
        (tmp_path / "mc" / mc / "ue_count").write_text(f"{ue}\n")
        (tmp_path / "mc" / mc / "ce_count").write_text(f"{ce}\n")
    results = EdacProbe(tmp_path).run()
    assert [(r.severity, r.message.split(":")[0]) for r in results] == [(Severity.OK, "EDAC MC0"),
                                                                        (Severity.FAIL, "EDAC MC1")]


def test_ipmi_sel_asserted_faults_since_the_start() -> None:
    since = datetime(2023, 11, 14).timestamp()
    text = (FIX / "ipmi-sel-elist.txt").read_text()
    results = IpmiSelProbe(since, lambda argv, t: text, which=lambda name: "/usr/bin/ipmitool").run()
    assert [r.message.split("|")[3].strip() for r in results] == ["Power Supply #0x52", "Fan #0x30", "Memory #0x87"]
    assert all(r.severity is Severity.FAIL and r.source == "ipmi-sel" for r in results)
    [absent] = IpmiSelProbe(since, lambda argv, t: text, which=lambda name: None).run()
    assert absent.severity is Severity.OK and "no ipmitool" in absent.message


def test_storage_free_space_and_write_check(tmp_path: Path) -> None:
    [ok] = StorageProbe(tmp_path).run()
    assert ok.severity is Severity.OK and "write check passed" in ok.message
    assert list(tmp_path.iterdir()) == []  # the probe file is gone
    full = StorageProbe(tmp_path, min_free_bytes=1 << 62).run()
    assert [r.severity for r in full] == [Severity.FAIL] and "free" in full[0].message
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o500)
    try:
        if not _can_write(ro):
            bad = StorageProbe(ro).run()
            assert bad[0].severity is Severity.FAIL and "write check failed" in bad[0].message
    finally:
        ro.chmod(0o700)


def _can_write(path: Path) -> bool:
    try:
        (path / "x").write_text("")
        (path / "x").unlink()
        return True
    except OSError:
        return False


class _Hangs:
    name, timeout_s = "hangs", 0.2

    def __init__(self) -> None:
        self.release = threading.Event()

    def run(self) -> list[ProbeResult]:
        self.release.wait(30)
        return []


class _Raises:
    name, timeout_s = "raises", 1.0

    def run(self) -> list[ProbeResult]:
        raise RuntimeError("driver says no")


def test_a_hung_or_broken_probe_is_abandoned_at_its_limit_and_reported_as_warn(tmp_path: Path) -> None:
    hung = _Hangs()
    t0 = time.monotonic()
    results = run_probes([hung, _Raises(), StorageProbe(tmp_path)], "h1")
    took = time.monotonic() - t0
    hung.release.set()
    assert took < 5
    msgs = {r.probe: (r.severity, r.message) for r in results}
    assert msgs["hangs"][0] is Severity.WARN and "did not answer within 0.2 s" in msgs["hangs"][1]
    assert msgs["raises"][0] is Severity.WARN and "driver says no" in msgs["raises"][1]
    assert msgs["storage"][0] is Severity.OK and all(r.host == "h1" for r in results)
    [r] = run_probe(_Raises(), "h2")
    assert r.host == "h2"


def test_a_failed_result_becomes_a_bad_gpu_finding_naming_host_and_gpu(tmp_path: Path) -> None:
    results = GpuProbe(nvml(tmp_path, "nvml-healthy.json", xids=True)).run()
    results = [ProbeResult(r.probe, r.severity, r.message, "node-7", r.gpu, r.source, r.at) for r in results]
    f = bad_gpu_finding(results, "node-7", 1700000200.0, ranks=(4, 5))
    assert f is not None and f.kind is FindingKind.BAD_GPU and f.hosts == ("node-7",) and f.ranks == (4, 5)
    assert f.fault_at == 1700000100.0 and "GPU 3" in f.summary and "fallen off the bus" in f.summary
    assert {p["severity"] for p in f.evidence["probes"]} == {"fail", "warn"}  # ok results are not evidence
    assert bad_gpu_finding([r for r in results if r.severity is not Severity.FAIL], "node-7", 0.0) is None


def test_the_agent_keeps_non_ok_results_as_time_ordered_evidence(tmp_path: Path) -> None:
    from health.agent import NodeAgent

    adapter = nvml(tmp_path, "nvml-healthy.json", xids=True)
    agent = NodeAgent("node-7", probes=lambda: [GpuProbe(adapter), StorageProbe(tmp_path / "ckpt")])
    results = agent.probe(deadline_s=5)
    assert {r["probe"] for r in results} == {"gpu", "storage"}
    ev = agent.evidence()
    assert [(e["gpu"], e["severity"]) for e in ev] == [(1, "warn"), (3, "fail")]  # by time: Xid 13, then 79
    assert all(e["host"] == "node-7" and e["source"] == "nvml" for e in ev)
    agent.probe(deadline_s=5)
    assert len(agent.evidence()) == 2 and agent.evidence(since=1700000070.0)[0]["gpu"] == 3
    assert agent.report()["findings"] == []  # no ranks watched: a preflight's fail is the controller's to act on
