"""Connecting to Ray: the embedded local cluster by default, a real one by address."""

from __future__ import annotations

import logging
import os
import socket
from dataclasses import dataclass

ENV_RAY_ADDRESS = "RAY_ADDRESS"
REACH_TIMEOUT_S = 5.0
"""How long to wait for a GCS to accept a connection before saying nobody answers (Ray itself retries ~minutes)."""


@dataclass(frozen=True, slots=True)
class Connection:
    embedded: bool
    address: str
    """GCS address other processes can connect to (status, stop, chaos)."""


def resolve_address(explicit: str | None) -> str | None:
    return explicit or os.environ.get(ENV_RAY_ADDRESS) or None


def check_reachable(address: str, timeout_s: float = REACH_TIMEOUT_S) -> None:
    """Raise ConnectionError at once when nothing listens at a `HOST:PORT` address.

    Other forms (`auto`, `ray://...`) are left to Ray.
    """
    host, sep, port = address.rpartition(":")
    if not sep or not port.isdigit() or "/" in address:
        return
    try:
        socket.create_connection((host.strip("[]") or "127.0.0.1", int(port)), timeout=timeout_s).close()
    except OSError as e:
        raise ConnectionError(f"nothing answers at {address} within {timeout_s:g} s ({e.strerror or e})") from None


def connect(address: str | None, *, num_cpus: float | None = None) -> Connection:
    """Join the cluster at `address`, or start an embedded one sized for the job.

    The embedded cluster declares at least `num_cpus` logical CPUs even on a
    smaller machine: ranks may outnumber cores (they just run slower).
    """
    import ray

    from orchestrator.client import NAMESPACE

    os.environ.setdefault("RAY_DEDUP_LOGS", "0")
    if address:
        check_reachable(address)
        ctx = ray.init(address=address, namespace=NAMESPACE, logging_level=logging.WARNING,
                       log_to_driver=False)
        return Connection(embedded=False, address=ctx.address_info.get("gcs_address", address))
    cpus = max(float(os.cpu_count() or 1), num_cpus or 0.0)
    ctx = ray.init(address="local", num_cpus=int(cpus + 0.999), include_dashboard=False, namespace=NAMESPACE,
                   logging_level=logging.WARNING, log_to_driver=False)
    return Connection(embedded=True, address=ctx.address_info["gcs_address"])


def join(address: str | None, *, embedded: bool) -> None:
    """Connect to the cluster a job runs on (for stop, chaos and other out-of-band calls).

    NOTE: call before anything imports ray in this process: Ray reads its auth
    mode once. An embedded cluster runs Ray's default token auth with this
    machine's token file, so clients must ask for token mode too.
    """
    if embedded:
        os.environ.setdefault("RAY_AUTH_MODE", "token")
    if address:
        check_reachable(address)
    import ray

    from orchestrator.client import NAMESPACE

    ray.init(address=address, namespace=NAMESPACE, logging_level=logging.WARNING, log_to_driver=False)


def disconnect() -> None:
    import ray

    if ray.is_initialized():
        ray.shutdown()
