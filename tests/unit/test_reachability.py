"""A lost host's address knocked on: silent on the network (its link) vs. refusing (its Ray node gone)."""

from __future__ import annotations

import socket

from health.reachability import ANSWERED, REFUSED, SILENT, knock, lost_host_evidence
from orchestrator.classifier import classify
from orchestrator.controller.evidence import probe_line

LOST = "rank 4's worker on host h3 is gone (actor or node died)"


def _verdict(reach: str | None, others_answered: bool) -> tuple[str, float, tuple[str, ...]]:
    e = lost_host_evidence("h3", "10.77.0.3", 41234, reach, others_answered, at=100.0, last_heard_s=2.5)
    v = classify(f"{LOST}\n{probe_line(e)}", kind="node_lost")
    return v.category, v.confidence, v.hosts


def test_a_host_silent_while_its_peers_answer_is_the_network_named_on_that_host() -> None:
    category, confidence, hosts = _verdict(SILENT, others_answered=True)
    assert category == "network_switch_cable" and hosts == ("h3",)
    # A host without power is silent too: not certain enough to be a hardware verdict on its own.
    assert confidence < 0.8


def test_a_host_that_refuses_or_answers_is_not_a_network_fault() -> None:
    assert _verdict(REFUSED, others_answered=True)[0] != "network_switch_cable"
    assert _verdict(ANSWERED, others_answered=True)[0] != "network_switch_cable"


def test_silence_when_no_other_host_answered_either_names_no_network_fault_of_that_host() -> None:
    # The controller's own network may be what is down.
    assert _verdict(SILENT, others_answered=False)[0] != "network_switch_cable"
    assert _verdict(None, others_answered=True)[0] != "network_switch_cable"


def test_a_power_loss_in_the_bmc_log_wins_over_silence() -> None:
    e = lost_host_evidence("h3", "10.77.0.3", 41234, SILENT, True, at=100.0, last_heard_s=2.5)
    sel = "host=h3 source=bmc severity=fail: SEL: Power Supply PS1 AC lost | Asserted"
    v = classify(f"{LOST}\n{sel}\n{probe_line(e)}", kind="node_lost")
    assert v.category == "power_supply", v


def test_the_evidence_says_when_the_host_was_last_heard() -> None:
    e = lost_host_evidence("h3", "10.77.0.3", 41234, SILENT, True, at=100.0, last_heard_s=7.25)
    assert "last heard 7.2 s before" in e["message"] and e["host"] == "h3" and e["severity"] == "fail"


def test_knock_tells_a_listening_port_from_a_closed_one_on_loopback() -> None:
    with socket.socket() as srv:
        srv.bind(("127.0.0.1", 0))
        srv.listen(1)
        port = srv.getsockname()[1]
        assert knock("127.0.0.1", port, timeout_s=1.0) == ANSWERED
    # The same port, closed now: the kernel answers with a reset.
    assert knock("127.0.0.1", port, timeout_s=1.0) == REFUSED
