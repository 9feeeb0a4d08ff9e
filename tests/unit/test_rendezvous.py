"""Waiting for rank 0's rendezvous server: at once when it listens, as soon as it does, a clear error if never."""

from __future__ import annotations

import socket
import threading
import time

import pytest
from torch.distributed import DistStoreError

from trainer.ports import free_port
from trainer.rendezvous import wait_for_store


def listen_after(port: int, delay_s: float, stop: threading.Event) -> threading.Thread:
    def serve() -> None:
        time.sleep(delay_s)
        with socket.socket() as s:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            s.bind(("127.0.0.1", port))
            s.listen()
            stop.wait(10)

    t = threading.Thread(target=serve, daemon=True)
    t.start()
    return t


def test_returns_as_soon_as_the_server_listens() -> None:
    port, stop = free_port(), threading.Event()
    try:
        listen_after(port, 0.3, stop)
        waited = wait_for_store("127.0.0.1", port, 10)
        assert 0.25 <= waited < 1.0, waited  # polled, not backed off for a second
        assert wait_for_store("127.0.0.1", port, 10) < 0.1  # already up: no wait
    finally:
        stop.set()


def test_nothing_listening_is_a_rendezvous_timeout_naming_the_address() -> None:
    port = free_port()
    t0 = time.monotonic()
    with pytest.raises(DistStoreError, match=rf"Timed out after 1 s .*127\.0\.0\.1:{port}"):
        wait_for_store("127.0.0.1", port, 1.0)
    assert time.monotonic() - t0 < 2.5
