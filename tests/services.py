"""Real servers started for the tests: a throwaway PostgreSQL cluster."""

from __future__ import annotations

import glob
import os
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from trainer.ports import free_port


def pg_bin(name: str) -> str | None:
    found = shutil.which(name)
    if found:
        return found
    cands = sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"))
    return cands[-1] if cands else None


def _as_pg_user(cmd: list[str]) -> list[str]:
    # initdb and postgres refuse to run as root.
    if os.geteuid() == 0:
        return ["runuser", "-u", "postgres", "--", *cmd]
    return cmd


@contextmanager
def postgres_server() -> Iterator[str]:
    """Start PostgreSQL on a free loopback port; yields an admin URL."""
    initdb, pg_ctl = pg_bin("initdb"), pg_bin("pg_ctl")
    if not (initdb and pg_ctl):
        raise RuntimeError("PostgreSQL binaries not found (apt-get install postgresql)")
    root = tempfile.mkdtemp(prefix="orch-pg-")
    os.chmod(root, 0o777)
    data = os.path.join(root, "data")
    port = free_port()
    subprocess.run(_as_pg_user([initdb, "-D", data, "-U", "postgres", "-A", "trust", "--no-sync"]),
                   check=True, capture_output=True)
    opts = f"-p {port} -k {root} -c listen_addresses=127.0.0.1 -c fsync=off"
    subprocess.run(_as_pg_user([pg_ctl, "-D", data, "-o", opts, "-l", os.path.join(root, "log"), "-w",
                                "start"]), check=True, capture_output=True)
    try:
        url = f"postgresql+psycopg://postgres@127.0.0.1:{port}/postgres"
        yield url
    finally:
        subprocess.run(_as_pg_user([pg_ctl, "-D", data, "-m", "immediate", "stop"]), capture_output=True)
        shutil.rmtree(root, ignore_errors=True)


def create_database(admin_url: str, name: str) -> str:
    import sqlalchemy as sa

    eng = sa.create_engine(admin_url, isolation_level="AUTOCOMMIT")
    with eng.connect() as c:
        c.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}"'))
        c.execute(sa.text(f'CREATE DATABASE "{name}"'))
    eng.dispose()
    return admin_url.rsplit("/", 1)[0] + f"/{name}"


def wait_port(port: int, timeout_s: float = 10.0) -> None:
    deadline = time.time() + timeout_s
    while time.time() < deadline:
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.1)
    raise TimeoutError(f"port {port} did not open")


@contextmanager
def prometheus_server(targets: list[str], rule_files: list[str] | None = None) -> Iterator[str]:
    """Debian's Prometheus on a free loopback port, scraping `targets` every second; yields its base URL.

    The scrape job is named `orchestrator` with `honor_labels: true`, as the README tells users to configure it.
    """
    import urllib.request

    import yaml

    binary = shutil.which("prometheus")
    if binary is None:
        raise RuntimeError("prometheus not found (apt-get install prometheus)")
    root = tempfile.mkdtemp(prefix="orch-prom-")
    port = free_port()
    config = {"global": {"scrape_interval": "1s", "scrape_timeout": "1s", "evaluation_interval": "1s"},
              "rule_files": list(rule_files or []),
              "scrape_configs": [{"job_name": "orchestrator", "honor_labels": True,
                                  "static_configs": [{"targets": targets}]}]}
    cfg = os.path.join(root, "prometheus.yml")
    with open(cfg, "w") as f:
        yaml.safe_dump(config, f)
    log = open(os.path.join(root, "log"), "wb")  # noqa: SIM115 - closed in finally
    proc = subprocess.Popen([binary, f"--config.file={cfg}", f"--storage.tsdb.path={root}/data",
                             f"--web.listen-address=127.0.0.1:{port}"], stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.time() + 30
        while True:
            try:
                if urllib.request.urlopen(f"{url}/-/ready", timeout=2).status == 200:
                    break
            except OSError:
                pass
            if proc.poll() is not None or time.time() > deadline:
                raise RuntimeError("prometheus did not start: " + Path(root, "log").read_text()[-2000:])
            time.sleep(0.2)
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()
        shutil.rmtree(root, ignore_errors=True)
