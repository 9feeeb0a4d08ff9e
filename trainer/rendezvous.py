"""Wait for rank 0's rendezvous server before connecting to it.

torch's TCPStore client backs off for about half a second to a second after a
refused connection, and rank 0's server (libuv, torch's default since 2.4)
starts listening only a moment after rank 0 asks for it. Ranks started
together, as on a restart onto warm standbys, therefore lost ~0.7 s in
`init_process_group` on a 2-core host (`bench/rendezvous.py`); a plain TCP
connect, retried every 10 ms until the port accepts, costs nothing once the
server is up and hands torch a server that answers at once.
"""

from __future__ import annotations

import socket
import time

POLL_S = 0.01


def wait_for_store(addr: str, port: int, timeout_s: float) -> float:
    """Block until `addr:port` accepts a TCP connection; the seconds waited.

    Raises torch's `DistStoreError` (what a rendezvous that times out raises)
    when nothing accepts within `timeout_s`.
    """
    t0 = time.monotonic()
    deadline = t0 + timeout_s
    while True:
        try:
            with socket.create_connection((addr, port), timeout=max(0.1, min(1.0, deadline - time.monotonic()))) as s:
                if s.getsockname() != s.getpeername():
                    return time.monotonic() - t0
                # A local port nobody listens on can connect to itself (TCP simultaneous open): not the server.
                raise ConnectionRefusedError("connected to itself")
        except OSError as e:
            if time.monotonic() >= deadline:
                from torch.distributed import DistStoreError

                raise DistStoreError(f"Timed out after {timeout_s:.0f} s waiting for the rendezvous server at "
                                     f"{addr}:{port} to accept connections ({e})") from None
            time.sleep(POLL_S)
