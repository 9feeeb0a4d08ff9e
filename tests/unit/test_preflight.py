"""The preflight decision: which candidate hosts are taken out, on what evidence."""

from __future__ import annotations

from orchestrator.controller.preflight import PreflightReport, decide


def res(host: str, sev: str, msg: str, at: float, source: str = "nvml", gpu: int | None = 0) -> dict:
    return {"probe": "gpu", "severity": sev, "message": msg, "host": host, "gpu": gpu, "source": source, "at": at}


RANKS = {0: "h0", 1: "h0", 2: "h1", 3: "h1"}
COLL_OK = {r: {"ok": True, "message": "all-reduce over 4 ranks agreed"} for r in RANKS}


def test_all_healthy_passes() -> None:
    d = decide(PreflightReport({"h0": [res("h0", "ok", "GPU 0: healthy", 1)],
                                "h1": [res("h1", "warn", "GPU 0: PCIe link width x8 below its maximum x16", 1)]},
                               {}, COLL_OK, RANKS))
    assert d.ok and d.bad_hosts == () and "2 hosts and 4 ranks" in d.detail


def test_a_failed_probe_takes_its_host_out_with_the_evidence_in_time_order() -> None:
    d = decide(PreflightReport({"h0": [res("h0", "ok", "GPU 0: healthy", 1)],
                                "h1": [res("h1", "fail", "GPU 1: row remapping pending", 9, gpu=1),
                                       res("h1", "fail", "nvme0n1: I/O error", 3, "kernel/nvme", None),
                                       res("h1", "warn", "HW thermal slowdown", 2)]}, {}, COLL_OK, RANKS))
    assert not d.ok and d.bad_hosts == ("h1",)
    assert [e["at"] for e in d.evidence] == [3, 9] and all(e["host"] == "h1" for e in d.evidence)
    assert d.detail.startswith("preflight failed on h1: host=h1: nvme0n1")


def test_a_silent_agent_fails_its_host() -> None:
    d = decide(PreflightReport({"h0": [res("h0", "ok", "GPU 0: healthy", 1)]}, {"h1": "CallTimeout('no answer')"},
                               COLL_OK, RANKS))
    assert d.bad_hosts == ("h1",) and "did not answer" in d.evidence[0]["message"]


def test_a_rank_with_a_wrong_collective_result_names_its_host() -> None:
    coll = dict(COLL_OK)
    coll[3] = {"ok": False, "message": "GPU burn-in failed: matmul result differs from the reference", "at": 4}
    d = decide(PreflightReport({"h0": [], "h1": []}, {}, coll, RANKS))
    assert d.bad_hosts == ("h1",) and d.evidence[0]["source"] == "collective"
    assert "rank 3" in d.evidence[0]["message"]


def test_a_collective_failing_everywhere_names_no_host() -> None:
    coll = {r: {"ok": False, "message": "RuntimeError: connection refused"} for r in RANKS}
    d = decide(PreflightReport({"h0": [], "h1": []}, {}, coll, RANKS))
    assert not d.ok and d.bad_hosts == () and "every rank" in d.detail
