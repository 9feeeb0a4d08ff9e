from __future__ import annotations

import socket
import time

import pytest

from orchestrator.cluster import check_reachable


def test_an_address_where_nothing_listens_fails_at_once() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # bound, not listening: connections are refused
        t0 = time.monotonic()
        with pytest.raises(ConnectionError, match=f"nothing answers at 127.0.0.1:{port}"):
            check_reachable(f"127.0.0.1:{port}")
        assert time.monotonic() - t0 < 5


def test_a_listening_address_passes_and_other_forms_are_left_to_ray() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        check_reachable(f"127.0.0.1:{s.getsockname()[1]}")
    check_reachable("auto")
    check_reachable("ray://head:10001")
