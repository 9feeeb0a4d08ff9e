"""The slow-link decision over each host's probe, and the probe itself on loopback."""

from __future__ import annotations

from health.link_probe import LinkProbeServer, measure, name_slow_link, slow_link
from health.observations import Finding, FindingKind


def _r(transfer_s: float | None, rtt_s: float | None = 0.001, error: str | None = None) -> dict:
    return {"transfer_s": transfer_s, "rtt_s": rtt_s, "error": error}


def test_one_host_far_slower_than_the_rest_is_named() -> None:
    host, why = slow_link({"h1": _r(0.0004), "h2": _r(0.006), "h3": _r(3.9, rtt_s=0.45)})
    assert host == "h3" and "3.90 s" in why and "450 ms" in why


def test_a_host_whose_probe_timed_out_while_the_others_finished_is_named() -> None:
    host, _ = slow_link({"h1": _r(0.0004), "h2": _r(None, None, "TimeoutError: timed out"), "h3": _r(0.008)})
    assert host == "h2"


def test_fast_links_name_nobody_however_they_compare() -> None:
    # 20x slower than the next, but 64 KiB in 0.1 s is a working link.
    assert slow_link({"h1": _r(0.0002), "h2": _r(0.005), "h3": _r(0.1)})[0] is None


def test_two_slow_hosts_are_no_single_outlier() -> None:
    assert slow_link({"h1": _r(0.001), "h2": _r(2.0), "h3": _r(2.5)})[0] is None
    assert slow_link({"h1": _r(0.001), "h2": _r(None, None, "refused"), "h3": _r(None, None, "refused")})[0] is None


def test_one_host_probed_names_nobody() -> None:
    assert slow_link({"h2": _r(5.0)})[0] is None


def _hang() -> Finding:
    return Finding(FindingKind.HANG, (0, 1, 2, 3), ("h1", "h2"), 10.0, 30.0, "no step completed; no single rank",
                   evidence={"frozen": []})


def test_the_named_hang_carries_the_slow_hosts_ranks_and_a_probe_line() -> None:
    f = name_slow_link(_hang(), {"h1": _r(0.001), "h2": _r(4.0)}, {0: "h1", 1: "h1", 2: "h2", 3: "h2"}, at=31.0)
    assert f.hosts == ("h2",) and f.ranks == (2, 3)
    [line] = f.evidence["probes"]
    assert line["host"] == "h2" and line["severity"] == "fail" and line["message"].startswith("link slow:")
    assert f.fault_at == 10.0 and f.detected_at == 30.0


def test_without_an_outlier_the_hang_keeps_its_culprits() -> None:
    f = name_slow_link(_hang(), {"h1": _r(0.001), "h2": _r(0.002)}, {0: "h1", 1: "h1", 2: "h2", 3: "h2"}, at=31.0)
    assert f.hosts == ("h1", "h2") and f.ranks == (0, 1, 2, 3) and "probes" not in f.evidence
    assert "link probe:" in f.summary


def test_the_probe_times_a_round_trip_and_a_transfer_on_loopback() -> None:
    srv = LinkProbeServer("127.0.0.1")
    try:
        r = measure("127.0.0.1", srv.port, payload_bytes=64 * 1024, timeout_s=5.0)
    finally:
        srv.close()
    assert r["error"] is None and 0 < r["rtt_s"] < 1.0 and 0 < r["transfer_s"] < 1.0 and r["transfers"] == 3, r
    assert measure("127.0.0.1", srv.port, timeout_s=1.0)["error"], "a closed server is an error, not a time"
