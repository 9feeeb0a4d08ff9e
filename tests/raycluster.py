"""A real multi-node Ray cluster on this machine: `ray start --head` plus worker nodes."""

from __future__ import annotations

import os
import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager

from tests.conftest import BIN
from trainer.local_run import free_port

RAY = str(BIN / "ray")


def ray_env() -> dict[str, str]:
    env = dict(os.environ)
    env["PATH"] = f"{BIN}:{env.get('PATH', '')}"
    # Token auth is on by default in Ray 2.60; every process of the cluster and
    # every client must agree on the mode.
    env.setdefault("RAY_AUTH_MODE", "token")
    env.pop("RAY_ADDRESS", None)
    return env


@contextmanager
def ray_cluster(nodes: list[tuple[str, int]]) -> Iterator[str]:
    """Start one Ray node per (host label, cpus); the first is the head. Yields its address."""
    env = ray_env()
    port = free_port()
    address = f"127.0.0.1:{port}"
    tmp = tempfile.mkdtemp(prefix="orch-ray-")
    try:
        for i, (host, cpus) in enumerate(nodes):
            args = [RAY, "start", f"--num-cpus={cpus}", "--labels", f"host={host}", "--disable-usage-stats"]
            if i == 0:
                args += ["--head", f"--port={port}", "--include-dashboard=false", f"--temp-dir={tmp}"]
            else:
                args += [f"--address={address}"]
            r = subprocess.run(args, env=env, capture_output=True, text=True, timeout=120)
            if r.returncode != 0:
                raise RuntimeError(f"ray start failed: {r.stdout[-2000:]} {r.stderr[-2000:]}")
        yield address
    finally:
        subprocess.run([RAY, "stop", "--force"], env=env, capture_output=True, timeout=120)
