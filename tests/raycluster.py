"""A real multi-node Ray cluster on this machine: `ray start --head` plus worker nodes."""

from __future__ import annotations

import contextlib
import glob
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager

from tests.conftest import BIN
from trainer.ports import free_port

RAY = str(BIN / "ray")


NODE_DEATH_ENV = {"RAY_health_check_period_ms": "1000", "RAY_health_check_failure_threshold": "5"}
"""Ray marks a node dead after 5 missed health checks 1 s apart instead of 3 s apart (its defaults): the job of a
lost node waits about 5 s, not 15, for Ray to give the node up. Real clusters tune the same two settings."""


def ray_env() -> dict[str, str]:
    env = dict(os.environ, **NODE_DEATH_ENV)
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
        (head, head_cpus), workers = nodes[0], nodes[1:]
        _ray_start([f"--num-cpus={head_cpus}", "--labels", f"host={head}", "--head", f"--port={port}",
                    "--include-dashboard=false", f"--temp-dir={tmp}"], env)
        # Worker nodes start side by side, each with its own temp folder: in one folder, two starting raylets
        # race for the session's files.
        with ThreadPoolExecutor(max(1, len(workers))) as pool:
            started = [pool.submit(_ray_start, [f"--num-cpus={cpus}", "--labels", f"host={host}",
                                                f"--address={address}", f"--temp-dir={tmp}/node-{i}"], env)
                       for i, (host, cpus) in enumerate(workers, 1)]
            for f in started:
                f.result()
        yield address
    except BaseException:
        print_controller_log(tmp)
        raise
    finally:
        stop_cluster(tmp, address)


def _ray_start(args: list[str], env: dict[str, str]) -> None:
    r = subprocess.run([RAY, "start", "--disable-usage-stats", *args], env=env, capture_output=True, text=True,
                       timeout=120)
    if r.returncode != 0:
        raise RuntimeError(f"ray start failed: {r.stdout[-2000:]} {r.stderr[-2000:]}")


def print_controller_log(temp_dir: str, lines: int = 80) -> None:
    """Print the last log lines of the job controllers of the cluster: pytest shows them with a failed test."""
    logs = sorted(glob.glob(os.path.join(temp_dir, "**", "session_*", "logs", "worker-*.err"), recursive=True),
                  key=os.path.getmtime)
    for path in logs:
        with contextlib.suppress(OSError), open(path, errors="replace") as f:
            text = f.read().splitlines()
        if any("orchestrator.controller" in line for line in text[:400]) or any(
                ":actor_name:JobController" in line for line in text[:5]):
            print(f"---- controller log {os.path.basename(path)} (last {lines} lines) ----", file=sys.stderr)
            print("\n".join(text[-lines:]), file=sys.stderr)


def cluster_pids(temp_dir: str, address: str) -> list[int]:
    """Processes of the cluster started with `temp_dir` and GCS `address`, found by their command lines.

    `ray stop` would end every Ray cluster on the machine; this finds only ours.
    """
    marks = (temp_dir.encode(), f"gcs-address={address}".encode(), f"gcs_address={address}".encode(),
             f"--address={address}".encode())
    out = []
    for p in os.listdir("/proc"):
        if not p.isdigit() or int(p) == os.getpid():
            continue
        try:
            with open(f"/proc/{p}/cmdline", "rb") as f:
                cmd = f.read()
        except OSError:
            continue
        if any(m in cmd for m in marks):
            out.append(int(p))
    return out


def stop_cluster(temp_dir: str, address: str, grace_s: float = 2.0) -> None:
    """SIGTERM, then SIGKILL after `grace_s`: Ray's gcs_server and raylets outlast a 10-s grace anyway, and a
    test's cluster keeps nothing worth a graceful drain."""
    pids = cluster_pids(temp_dir, address)
    for sig in (signal.SIGTERM, signal.SIGKILL):
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, sig)
        deadline = time.time() + grace_s
        while time.time() < deadline and any(os.path.exists(f"/proc/{pid}") and not _zombie(pid) for pid in pids):
            time.sleep(0.2)
    shutil.rmtree(temp_dir, ignore_errors=True)


def _zombie(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] == "Z"
    except (OSError, IndexError):
        return True


def node_ids(address: str) -> dict[str, str]:
    """Host label -> Ray node id of every alive node of the cluster at `address` (read by a short-lived driver)."""
    code = ("import json, sys, ray; ray.init(address=sys.argv[1], logging_level='ERROR'); "
            "print(json.dumps({(n.get('Labels') or {}).get('host', ''): n['NodeID'] for n in ray.nodes() "
            "if n.get('Alive')}))")
    r = subprocess.run([sys.executable, "-c", code, address], env=ray_env(), capture_output=True, text=True,
                       timeout=180)
    if r.returncode != 0:
        raise RuntimeError(f"cannot list the nodes of {address}: {r.stderr[-2000:]}")
    return json.loads(r.stdout.strip().splitlines()[-1])
