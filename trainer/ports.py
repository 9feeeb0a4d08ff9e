"""Pick a port for a rendezvous server that no outgoing connection can take first.

A port the kernel hands out for `bind(0)` comes from the ephemeral range, the very
range it also picks from for every outgoing connection's local port. Between
choosing a port and rank 0 binding it, any process on the host (a Ray node's gRPC
clients, a database driver) can be given that port for a connection, and rank 0
then cannot listen while its peers wait out the whole collective timeout. Ports
below the ephemeral range are never handed out implicitly, so a free one stays
free unless another process binds that exact number on purpose.
"""

from __future__ import annotations

import random
import socket
from pathlib import Path

EPHEMERAL_RANGE_FILE = Path("/proc/sys/net/ipv4/ip_local_port_range")
# Ray's workers listen on 10002-19999 by default; start above them.
LOWEST = 20000
TRIES = 64


def ephemeral_range() -> tuple[int, int]:
    """The kernel's range for implicit local ports (Linux's default where it cannot be read)."""
    try:
        lo, hi = (int(x) for x in EPHEMERAL_RANGE_FILE.read_text().split())
        return lo, hi
    except (OSError, ValueError):
        return 32768, 60999


def candidate_range() -> tuple[int, int]:
    """Ports [start, end) outside the ephemeral range: below it, or above it when below is too narrow."""
    lo, hi = ephemeral_range()
    if lo - LOWEST >= 1000:
        return LOWEST, lo
    return hi + 1, 65536


def _bindable(host: str, port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind((host, port))
        except OSError:
            return False
    return True


def free_port(host: str = "127.0.0.1", rng: random.Random | None = None) -> int:
    """A port on `host` nothing listens on, outside the ephemeral range when one is free there."""
    rng = rng or random.SystemRandom()
    start, end = candidate_range()
    if end - start > 0:
        for _ in range(TRIES):
            port = rng.randrange(start, end)
            if _bindable(host, port):
                return port
    with socket.socket() as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])
