"""RankWorker: a Ray actor that supervises one rank's trainer process.

The trainer runs in a child process, not inside the actor, so that a rank can
be killed (SIGKILL), frozen (SIGSTOP) or crash on its own while the actor lives
on to report its exit code and signal, read its beacons and clean up. This is
the same split torchelastic makes between agent and worker.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import ray

from trainer import snapshot_files as sf
from trainer.launch import (
    ENV_ATTEMPT,
    ENV_BEACON_FILE,
    ENV_CHECKPOINT_DIR,
    ENV_CONTROL_FILE,
    ENV_CPUS,
    ENV_RUN_DIR,
    ENV_SNAPSHOT_DIR,
    STANDBY_FLAG,
)
from trainer.ports import free_port


def signal_name(returncode: int | None) -> str | None:
    if returncode is None or returncode >= 0:
        return None
    try:
        return signal.Signals(-returncode).name
    except ValueError:
        return f"SIG{-returncode}"


def tail(path: str | os.PathLike[str], max_bytes: int = 4096) -> str:
    try:
        with open(path, "rb") as f:
            f.seek(0, os.SEEK_END)
            size = f.tell()
            f.seek(max(0, size - max_bytes))
            return f.read().decode(errors="replace")
    except OSError:
        return ""


def process_stopped(pid: int) -> bool:
    """True when the process is in the stopped state (SIGSTOP / job control)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] in ("T", "t")
    except (OSError, IndexError):
        return False


def interface_of(ip: str) -> str | None:
    """The network interface that holds `ip` on this host (for GLOO_SOCKET_IFNAME / NCCL_SOCKET_IFNAME)."""
    import psutil

    for name, addrs in psutil.net_if_addrs().items():
        if any(a.family == socket.AF_INET and a.address == ip for a in addrs):
            return name
    return None


def _die_with_parent() -> None:
    """Linux: SIGKILL the trainer if its supervising actor dies, so no rank is orphaned."""
    try:
        import ctypes

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except OSError:
        pass


SNAPSHOT_COPY_POLL_S = 0.25
SNAPSHOT_COPY_TIMEOUT_S = 60.0
ENV_INTERFACE = "ORCHESTRATOR_NETWORK_INTERFACE"
"""Set by the controller from `resources.network_interface` to override the interface found from the node's IP."""


class RankWorker:
    """One per rank, inside the job's placement group; kept across attempts while its host is healthy.

    Between attempts it holds a warm standby process (torch already imported)
    so that a restart does not pay for a fresh interpreter on every rank.
    """

    def __init__(self, job: str, rank: int, run_dir: str, warm_standby: bool = True, cpus: float = 1.0) -> None:
        self.job, self.rank = job, rank
        self.attempt = 0
        self.run_dir = Path(run_dir)
        self.warm_standby = warm_standby
        self.proc: subprocess.Popen[bytes] | None = None
        self.standby: subprocess.Popen[bytes] | None = None
        self.log_path = self.run_dir / "logs" / "unstarted" / f"rank-{rank:05d}.log"
        self.beacon_path = self.run_dir / "beacons" / f"rank-{rank:05d}.json"
        self.control_path = self.run_dir / "control" / f"rank-{rank:05d}.json"
        self.cpus = cpus
        self.started_at: float | None = None
        self.exited_at: float | None = None
        self.snapshot_root: Path | None = None
        """This host's part of the job's snapshot folder (from the start request)."""
        self._peer: tuple[Any, str] | None = None
        """The supervisor on another host that keeps copies of this rank's snapshots, and its host's folder."""
        self._copier: threading.Thread | None = None
        # The first attempt's process starts importing torch now, while the gang is preflighted (in it).
        self._ensure_standby()

    def info(self) -> dict[str, Any]:
        ctx = ray.get_runtime_context()
        return {"node_id": ctx.get_node_id(), "ip": ray.util.get_node_ip_address(),
                "hostname": socket.gethostname(), "actor_pid": os.getpid(),
                "gpu_ids": [str(g) for g in ray.get_gpu_ids()]}

    def free_port(self) -> int:
        """A port for the rendezvous server, outside the ephemeral range (see trainer.ports)."""
        return free_port("")

    def _base_env(self) -> dict[str, str]:
        env = dict(os.environ)
        env.update({ENV_CPUS: str(self.cpus), "OMP_NUM_THREADS": str(max(1, int(self.cpus))),
                    "PYTHONUNBUFFERED": "1",
                    "CUDA_VISIBLE_DEVICES": ",".join(str(g) for g in ray.get_gpu_ids())})
        return env

    def _spawn(self, args: list[str], env: dict[str, str], log_path: Path,
               stdin: int | None = None) -> subprocess.Popen[bytes]:
        log_path.parent.mkdir(parents=True, exist_ok=True)
        with open(log_path, "ab") as log:
            return subprocess.Popen([sys.executable, "-m", "trainer.launch", *args], stdin=stdin,
                                    stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True,
                                    preexec_fn=_die_with_parent)

    def _ensure_standby(self) -> None:
        if not self.warm_standby or (self.standby is not None and self.standby.poll() is None):
            return
        self.standby = self._spawn([STANDBY_FLAG], self._base_env(),
                                   self.run_dir / "logs" / "standby" / f"rank-{self.rank:05d}.log",
                                   stdin=subprocess.PIPE)

    def start(self, attempt: int, config: dict[str, Any], config_path: str, env: dict[str, str],
              checkpoint_dir: str, cpus: float) -> dict[str, Any]:
        """Start this rank's trainer for `attempt`, on the warm standby when there is one.

        The config comes through Ray and is written on this host (at `config_path`, unless a
        file with the same content is there already): hosts need not share the controller's folder.
        """
        if self.proc is not None and self.proc.poll() is None:
            raise RuntimeError(f"rank {self.rank}: the trainer of attempt {self.attempt} still runs")
        text = json.dumps(config, indent=1)
        path = Path(config_path)
        try:
            same = path.read_text() == text
        except OSError:
            same = False
        if not same:
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
            tmp.write_text(text)
            os.replace(tmp, path)
        self.attempt, self.cpus = attempt, cpus
        self.log_path = self.run_dir / "logs" / f"attempt-{attempt:03d}" / f"rank-{self.rank:05d}.log"
        for p in (self.log_path, self.beacon_path, self.control_path):
            p.parent.mkdir(parents=True, exist_ok=True)
        self.beacon_path.unlink(missing_ok=True)
        self.control_path.unlink(missing_ok=True)
        full_env = self._base_env()
        full_env.update(env)
        # Each rank talks over its own node's address, not whatever its host name resolves to.
        iface = full_env.get(ENV_INTERFACE) or interface_of(ray.util.get_node_ip_address())
        if iface:
            full_env.setdefault("GLOO_SOCKET_IFNAME", iface)
            full_env.setdefault("NCCL_SOCKET_IFNAME", iface)
        if env.get(ENV_SNAPSHOT_DIR):
            self.snapshot_root = Path(env[ENV_SNAPSHOT_DIR])
        full_env.update({
            ENV_RUN_DIR: str(self.run_dir), ENV_CHECKPOINT_DIR: checkpoint_dir,
            ENV_ATTEMPT: str(attempt), ENV_BEACON_FILE: str(self.beacon_path),
            ENV_CONTROL_FILE: str(self.control_path),
        })
        warm = self._activate_standby({"config": config_path, "env": full_env, "log": str(self.log_path)})
        if not warm:
            self.proc = self._spawn([config_path], full_env, self.log_path)
        self.started_at = time.time()
        self.exited_at = None
        threading.Thread(target=self._wait_exit, args=(self.proc,), daemon=True).start()
        return {"pid": self.proc.pid if self.proc else None, "warm": warm}

    def _activate_standby(self, request: dict[str, Any]) -> bool:
        sb, self.standby = self.standby, None
        if sb is None or sb.poll() is not None or sb.stdin is None:
            return False
        try:
            sb.stdin.write((json.dumps(request) + "\n").encode())
            sb.stdin.close()
        except OSError:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(sb.pid, signal.SIGKILL)
            return False
        self.proc = sb
        return True

    def release(self) -> None:
        """The job no longer needs this rank: let the standby go (end of input)."""
        sb, self.standby = self.standby, None
        if sb is not None and sb.stdin is not None:
            with contextlib.suppress(OSError):
                sb.stdin.close()

    def _wait_exit(self, proc: subprocess.Popen[bytes]) -> None:
        proc.wait()
        if proc is self.proc:
            self.exited_at = time.time()

    def poll(self) -> dict[str, Any]:
        """Process state plus the latest beacon."""
        rc = None if self.proc is None else self.proc.poll()
        beacon: dict[str, Any] | None = None
        try:
            beacon = json.loads(self.beacon_path.read_text())
        except (OSError, ValueError):
            beacon = None
        if rc is None and beacon is not None and beacon.get("phase") == "train":
            self._ensure_standby()  # the attempt is underway: prepare the next one's process
        return {"rank": self.rank, "pid": None if self.proc is None else self.proc.pid,
                "running": self.proc is not None and rc is None, "returncode": rc,
                "signal": signal_name(rc), "beacon": beacon, "time": time.time(),
                "exited_at": self.exited_at if rc is not None else None,
                "stopped": rc is None and self.proc is not None and process_stopped(self.proc.pid)}

    def send_signal(self, sig: int) -> bool:
        if self.proc is None or self.proc.poll() is not None:
            return False
        self.proc.send_signal(sig)
        return True

    def set_step_delay(self, seconds: float) -> None:
        self.control(step_delay_s=seconds)

    def set_stall(self, where: str | None) -> None:
        """Make the rank block at `where` of its next step (None releases it); see trainer.launch.ControlFile."""
        self.control(stall=where)

    def control(self, **request: Any) -> dict[str, Any]:
        """Merge `request` into the rank's control file (None removes a key), atomically; the trainer
        re-reads it before each step."""
        self.control_path.parent.mkdir(parents=True, exist_ok=True)
        try:
            current = json.loads(self.control_path.read_text())
        except (OSError, ValueError):
            current = {}
        current.update(request)
        current = {k: v for k, v in current.items() if v is not None}
        tmp = self.control_path.with_suffix(".tmp")
        tmp.write_text(json.dumps(current))
        os.replace(tmp, self.control_path)
        return current

    def inject_xid(self, code: int, gpu: int = 0) -> dict[str, Any] | None:
        """Make this host's fake NVML report an Xid; None when the host reads a real NVML instead."""
        from health.probes.gpu import inject_xid
        from health.probes.suite import ENV_FAKE_NVML, fake_nvml_dir

        if os.environ.get(ENV_FAKE_NVML) != "1":
            return None
        folder = fake_nvml_dir(self.run_dir, ray.get_runtime_context().get_node_id())
        return inject_xid(folder, code, gpu, pci=f"0000:{0x18 + gpu:02x}:00")

    def preflight(self, env: dict[str, str], timeout_s: float) -> dict[str, Any]:
        """This rank's part of the preflight collective, in the rank's warm standby when it has one (the
        process that then trains: torch is imported once per rank), else in this supervisor's process.
        The process group is made for the check and dropped after it."""
        iface = env.get(ENV_INTERFACE) or interface_of(ray.util.get_node_ip_address())
        if iface:
            env = {**env, "GLOO_SOCKET_IFNAME": iface, "NCCL_SOCKET_IFNAME": iface}
        use_cuda = bool(ray.get_gpu_ids())
        budget = max(1.0, timeout_s - 2.0)
        sb = self.standby
        if sb is not None and sb.poll() is None and sb.stdin is not None:
            return self._preflight_in_standby(sb, env, budget, timeout_s, use_cuda)
        from trainer.preflight import run_request

        return run_request(env, budget, use_cuda=use_cuda)

    def _preflight_in_standby(self, sb: subprocess.Popen[bytes], env: dict[str, str], budget: float,
                              timeout_s: float, use_cuda: bool) -> dict[str, Any]:
        assert sb.stdin is not None
        t0 = time.time()
        result = self.run_dir / "preflight" / f"rank-{self.rank:05d}-{os.getpid()}-{time.monotonic_ns()}.json"
        result.parent.mkdir(parents=True, exist_ok=True)
        req = {"preflight": {"env": env, "timeout_s": budget, "use_cuda": use_cuda, "result": str(result)}}
        try:
            sb.stdin.write((json.dumps(req) + "\n").encode())
            sb.stdin.flush()
        except OSError as e:
            return {"ok": False, "message": f"the rank's standby process took no request: {e}", "at": time.time()}
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            try:
                ans = json.loads(result.read_text())
                result.unlink(missing_ok=True)
                return dict(ans)
            except (OSError, ValueError):
                pass
            if sb.poll() is not None:
                self.standby = None
                return {"ok": False, "message": f"the rank's process exited with code {sb.returncode} during the "
                        f"preflight", "seconds": time.time() - t0, "at": time.time()}
            time.sleep(0.05)
        # No answer: the process is stuck in the check and is no use as a trainer.
        self.standby = None
        with contextlib.suppress(ProcessLookupError):
            os.killpg(sb.pid, signal.SIGKILL)
        return {"ok": False, "message": f"no preflight answer from the rank's process within {timeout_s:.0f} s",
                "seconds": time.time() - t0, "at": time.time()}

    def stop(self, grace_s: float = 5.0) -> dict[str, Any]:
        """SIGTERM, then SIGKILL after the grace period (a stopped process is continued first)."""
        if self.proc is not None and self.proc.poll() is None:
            try:
                os.killpg(self.proc.pid, signal.SIGCONT)
                self.proc.terminate()
                self.proc.wait(timeout=grace_s)
            except subprocess.TimeoutExpired:
                self._kill()
            except ProcessLookupError:
                pass
        return self.poll()

    def kill(self) -> dict[str, Any]:
        self._kill()
        return self.poll()

    def _kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(timeout=30)

    def sees(self, name: str, token: str) -> bool:
        """Whether run_dir/`name` on this host holds `token`: does this host share the controller's folder?"""
        try:
            return (self.run_dir / name).read_text() == token
        except OSError:
            return False

    def read_from(self, name: str, offset: int | None, max_bytes: int = 1 << 20) -> tuple[str, int]:
        """Whole lines of run_dir/`name` on this host from byte `offset` (None: from its end now), and the next offset.

        How a file a rank writes on its own host (rank 0's metrics.jsonl) reaches the controller's folder.
        """
        path = self.run_dir / name
        try:
            with open(path, "rb") as f:
                f.seek(0, os.SEEK_END)
                size = f.tell()
                if offset is None or offset > size:
                    return "", size
                f.seek(offset)
                data = f.read(max_bytes)
        except OSError:
            return "", 0 if offset is None else offset
        whole = data[: data.rfind(b"\n") + 1]
        return whole.decode(errors="replace"), offset + len(whole)

    def log_tail(self, max_bytes: int = 4096) -> str:
        return tail(self.log_path, max_bytes)

    # ---- snapshots: a copy on another host, and a restore before a start ------------------------------
    def snapshot_inventory(self, root: str) -> dict[str, Any]:
        """The snapshots this host holds under `root`: {"local"|"held": {rank: {step: marker}}}."""
        return sf.inventory(Path(root))

    def snapshot_read(self, root: str, kind: str, rank: int, step: int) -> tuple[dict[str, Any], bytes]:
        return sf.read_snapshot(Path(root), kind, rank, step)

    def snapshot_install(self, root: str, kind: str, rank: int, payload: tuple[dict[str, Any], bytes]) -> int:
        """Store a snapshot sent from another host (a peer's copy, or a restore onto this host); its step."""
        marker, data = payload
        sf.install(Path(root), kind, rank, marker, data)
        return int(marker["step"])

    def drop_snapshots(self, snapshot_dir: str) -> None:
        """The job is over: remove its snapshot folder from this host (only a folder under the snapshot root)."""
        self._peer = None
        sf.remove_job_folder(Path(snapshot_dir))

    def set_snapshot_peer(self, peer: Any, peer_root: str) -> None:
        """From now on copy each new snapshot of this rank to `peer` (a supervisor on another host)."""
        self._peer = (peer, peer_root)
        if self._copier is None or not self._copier.is_alive():
            self._copier = threading.Thread(target=self._copy_snapshots, daemon=True, name="snapshot-copier")
            self._copier.start()

    def _copy_snapshots(self) -> None:
        """Send this rank's newest snapshot to the peer whenever there is a new one; a failed send is
        tried again (with whatever is newest by then)."""
        sent: set[str] = set()
        failed: set[str] = set()
        while True:
            time.sleep(SNAPSHOT_COPY_POLL_S)
            if self._peer is None or self.snapshot_root is None:
                continue
            peer, peer_root = self._peer
            newest = sf.list_snapshots(sf.folder_of(self.snapshot_root, "local", self.rank))[-1:]
            if not newest or newest[0].sha256 in sent:
                continue
            meta = newest[0]
            try:
                payload = sf.read_snapshot(self.snapshot_root, "local", self.rank, meta.step)
                ray.get(peer.snapshot_install.remote(peer_root, sf.HELD, self.rank, payload),
                        timeout=SNAPSHOT_COPY_TIMEOUT_S)
                sent.add(meta.sha256)
            except Exception as e:  # pruned meanwhile, the peer busy or gone: the next round tries again
                if meta.sha256 not in failed:
                    failed.add(meta.sha256)
                    print(f"rank {self.rank}: snapshot copy of step {meta.step} to its peer failed: {e!r:.200}",
                          file=sys.stderr)
