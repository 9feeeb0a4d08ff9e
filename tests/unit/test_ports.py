"""Rendezvous ports come from outside the kernel's ephemeral range, so no outgoing connection takes them."""

from __future__ import annotations

import random
import socket
from pathlib import Path

import pytest

from trainer import ports


def test_ports_are_outside_the_ephemeral_range_and_free() -> None:
    lo, hi = ports.ephemeral_range()
    for _ in range(20):
        port = ports.free_port()
        assert not lo <= port <= hi
        with socket.socket() as s:
            s.bind(("127.0.0.1", port))


def test_a_taken_port_is_passed_over() -> None:
    first = ports.free_port(rng=random.Random(7))
    with socket.socket() as held:
        held.bind(("127.0.0.1", first))
        held.listen()
        assert ports.free_port(rng=random.Random(7)) != first


def test_the_range_is_above_the_ephemeral_one_when_below_is_too_narrow(tmp_path: Path,
                                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    f = tmp_path / "range"
    f.write_text("1024\t50000\n")
    monkeypatch.setattr(ports, "EPHEMERAL_RANGE_FILE", f)
    assert ports.candidate_range() == (50001, 65536)
    assert ports.free_port() > 50000
    f.write_text("32768\t60999\n")
    assert ports.candidate_range() == (ports.LOWEST, 32768)
    monkeypatch.setattr(ports, "EPHEMERAL_RANGE_FILE", tmp_path / "absent")
    assert ports.ephemeral_range() == (32768, 60999)
