"""Which host's link is slow? Each host times a round trip and a small transfer to the controller's node.

A slow link stalls every rank of a ring in the same collective, so the flight
recorder cannot say whose link it is: the ranks on both ends wait alike. Each
candidate host's agent then measures, on its own host and with its own clock,
a few round trips and the best of three transfers of `PAYLOAD_BYTES` to a
small server in the controller's process. One host far slower than every other is the slow
link. `slow_link` and `name_slow_link` are pure (no sockets, no clock); the
server and `measure` are the I/O around them.
"""

from __future__ import annotations

import contextlib
import math
import socket
import statistics
import struct
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Any

from health.observations import Finding

PAYLOAD_BYTES = 64 * 1024
TIMEOUT_S = 5.0
ROUND_TRIPS = 3
TRANSFERS = 3
SOURCE = "link_probe"


@dataclass(frozen=True, slots=True)
class LinkRule:
    min_transfer_s: float = 0.25
    """A transfer faster than this is a working link, however it compares (64 KiB in 0.25 s is ~2 Mbit/s)."""
    ratio: float = 4.0
    """The slowest host must be this many times slower than the next slowest."""
    floor_s: float = 0.01
    """Next-slowest times below this count as this (a fast local link must not make any other an outlier)."""


def _cost(r: Mapping[str, Any]) -> float:
    """Seconds the host took to move the payload; a failed or timed-out probe counts as never."""
    t = r.get("transfer_s")
    return math.inf if r.get("error") or t is None else float(t)


def slow_link(results: Mapping[str, Mapping[str, Any]], rule: LinkRule = LinkRule()) -> tuple[str | None, str]:
    """(The host whose link is the single clear outlier, or None; why). `results`: host -> measure()'s answer."""
    if len(results) < 2:
        return None, f"{len(results)} host(s) probed: nothing to compare"
    ranked = sorted(results, key=lambda h: _cost(results[h]), reverse=True)
    worst, second = ranked[0], ranked[1]
    cw, cs = _cost(results[worst]), _cost(results[second])
    others = [_cost(results[h]) for h in ranked[1:]]
    median = statistics.median(others)
    if math.isinf(cs):
        return None, f"{sum(math.isinf(_cost(r)) for r in results.values())} hosts could not move the probe"
    if cw < rule.min_transfer_s:
        return None, f"every host moved {PAYLOAD_BYTES // 1024} KiB in under {rule.min_transfer_s:g} s"
    if cw < rule.ratio * max(cs, rule.floor_s):
        return None, (f"no single slow link: {worst} took {cw:.3f} s and {second} {cs:.3f} s "
                      f"for {PAYLOAD_BYTES // 1024} KiB")
    kib = PAYLOAD_BYTES // 1024
    took = (f"did not move {kib} KiB to the controller's node within its time limit" if math.isinf(cw)
            else f"took {cw:.2f} s to move {kib} KiB to the controller's node")
    rtt = results[worst].get("rtt_s")
    rtt_s = f" (round trip {rtt * 1000:.0f} ms)" if rtt is not None else ""
    return worst, (f"host {worst}'s link is far slower than its peers': it {took}{rtt_s}, against a median "
                   f"{median:.3f} s on the other {len(others)} host(s)")


def name_slow_link(f: Finding, results: Mapping[str, Mapping[str, Any]], rank_hosts: Mapping[int, str],
                   at: float, rule: LinkRule = LinkRule()) -> Finding:
    """`f` (a hang) naming the slow link's host when the probe found one, else `f` with the probe noted."""
    host, why = slow_link(results, rule)
    evidence = {**f.evidence, "link_probe": {h: dict(r) for h, r in results.items()}}
    if host is None:
        return replace(f, summary=f"{f.summary}; link probe: {why}", evidence=evidence)
    ranks = tuple(r for r in f.ranks if rank_hosts.get(r) == host) or tuple(
        sorted(r for r, h in rank_hosts.items() if h == host))
    line = {"host": host, "source": SOURCE, "severity": "fail", "message": f"link slow: {why}", "at": at}
    evidence["probes"] = [*f.evidence.get("probes", []), line]
    evidence["named_by"] = "link_probe"
    return replace(f, ranks=ranks, hosts=(host,), summary=f"{f.summary}; link probe: {why}", evidence=evidence)


# ---- the I/O: a sink in the controller's process, a client on each host --------------------------------
class LinkProbeServer:
    """Echoes single bytes (round trips) and acknowledges a length-prefixed payload once it has all of it."""

    def __init__(self, address: str) -> None:
        self._sock = socket.create_server((address, 0))
        self.address, self.port = address, self._sock.getsockname()[1]
        self._closed = False
        threading.Thread(target=self._accept, daemon=True, name="link-probe").start()

    def _accept(self) -> None:
        while not self._closed:
            try:
                conn, _ = self._sock.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _serve(self, conn: socket.socket) -> None:
        with conn, contextlib.suppress(OSError):
            conn.settimeout(TIMEOUT_S * 2)
            for _ in range(ROUND_TRIPS):
                conn.sendall(_read(conn, 1))
            for _ in range(TRANSFERS):
                left = struct.unpack("!I", _read(conn, 4))[0]
                while left:
                    chunk = conn.recv(min(left, 1 << 16))
                    if not chunk:
                        return
                    left -= len(chunk)
                conn.sendall(b"k")

    def close(self) -> None:
        self._closed = True
        with contextlib.suppress(OSError):
            self._sock.shutdown(socket.SHUT_RDWR)  # wakes the accept() in progress (close alone does not)
        with contextlib.suppress(OSError):
            self._sock.close()


def _read(conn: socket.socket, n: int) -> bytes:
    buf = b""
    while len(buf) < n:
        chunk = conn.recv(n - len(buf))
        if not chunk:
            raise ConnectionError("closed")
        buf += chunk
    return buf


def measure(address: str, port: int, payload_bytes: int = PAYLOAD_BYTES, timeout_s: float = TIMEOUT_S
            ) -> dict[str, Any]:
    """On a host: the best of a few round trips and of a few transfers of `payload_bytes` to the server (fewer
    when they would not fit the time limit), on this host's own monotonic clock; an error (timeout, refused)
    instead when not even one finished."""
    deadline = time.monotonic() + timeout_s
    try:
        with socket.create_connection((address, port), timeout=timeout_s) as s:
            s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            rtts = []
            for _ in range(ROUND_TRIPS):
                s.settimeout(max(0.01, deadline - time.monotonic()))
                t0 = time.monotonic()
                s.sendall(b"p")
                _read(s, 1)
                rtts.append(time.monotonic() - t0)
            # The best of a few transfers: a loaded CPU only ever adds time, a slow link is slow every time.
            took: list[float] = []
            for _ in range(TRANSFERS):
                if took and time.monotonic() + took[0] > deadline:
                    break
                t0 = time.monotonic()
                s.settimeout(max(0.01, deadline - time.monotonic()))
                s.sendall(struct.pack("!I", payload_bytes) + b"\0" * payload_bytes)
                _read(s, 1)
                took.append(time.monotonic() - t0)
            return {"rtt_s": min(rtts), "transfer_s": min(took), "transfers": len(took), "error": None}
    except (OSError, ConnectionError) as e:
        return {"rtt_s": None, "transfer_s": None, "error": f"{type(e).__name__}: {e}"[:200]}
