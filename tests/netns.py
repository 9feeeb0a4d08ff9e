"""A cluster of separate hosts on one machine: Linux network and mount namespaces, a Ray node in each.

Each host is a network namespace with its own address on a bridge, and its own
mount namespace in which /tmp and the controller's state folder are private
tmpfs mounts: a host sees its own files plus what the whole machine shares (the
code, the virtual environment, root's home with Ray's auth token, and the one
checkpoint folder made for the cluster). The bridge lives in a namespace of its
own, so nothing is added to the machine's own network. A host is named by its
Ray `host` label (host names resolve to 127.0.0.1 inside a namespace).

Every process of a host is found through its namespace (`ip netns pids`) and
stopped by pid, never with `ray stop`, which ends every Ray cluster it can see.
Namespaces, links, mounts and folders go when the context ends, also when a
test fails, and at interpreter exit as a fallback.

Needs root (CAP_SYS_ADMIN, CAP_NET_ADMIN), `ip`, `nsenter`, `unshare`; `tc` for a slow link.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import secrets
import shlex
import shutil
import signal
import subprocess
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from tests.conftest import BIN, REPO
from tests.raycluster import NODE_DEATH_ENV

RAY = str(BIN / "ray")
SUBNET = "10.77.0"
GCS_PORT = 6379
FAKETIME_LIB = "/usr/lib/x86_64-linux-gnu/faketime/libfaketime.so.1"


def available() -> str | None:
    """Why a namespace cluster cannot be made here, or None."""
    if os.geteuid() != 0:
        return "needs root"
    for tool in ("ip", "nsenter", "unshare", "tc"):
        if shutil.which(tool) is None:
            return f"needs {tool}"
    return None


def _sh(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    r = subprocess.run(list(args), capture_output=True, text=True, timeout=60)
    if check and r.returncode != 0:
        raise RuntimeError(f"{shlex.join(args)}: {r.stderr.strip()[:500]}")
    return r


@dataclass
class Host:
    name: str
    """The Ray `host` label."""
    ip: str
    netns: str
    veth: str
    """The switch side of the host's link (in the bridge's namespace)."""
    cpus: int
    holder: subprocess.Popen[bytes] | None = None
    """A process that keeps the host's mount namespace alive; commands enter the host through its pid."""
    env: dict[str, str] = field(default_factory=dict)
    """Extra environment for every process started on this host (e.g. a skewed clock)."""


class NetnsCluster:
    def __init__(self, hosts: list[tuple[str, int]], *, tag: str | None = None,
                 host_env: dict[str, dict[str, str]] | None = None) -> None:
        self.tag = tag or secrets.token_hex(3)
        self.base = Path(f"/var/tmp/orch-netns-{self.tag}")
        self.state_dir = self.base / "state"
        """The controller's state folder: real on the head, an empty private tmpfs on every other host."""
        self.checkpoints = self.base / "checkpoints"
        """The one folder every host shares."""
        self.switch = f"orsw-{self.tag}"
        self.hosts = [Host(name, f"{SUBNET}.{i + 1}", f"orh{i + 1}-{self.tag}", f"orv{i + 1}-{self.tag}", cpus,
                           env=dict((host_env or {}).get(name, {})))
                      for i, (name, cpus) in enumerate(hosts)]
        self.address = f"{self.hosts[0].ip}:{GCS_PORT}"
        self._made_ns: list[str] = []

    # ---- building ------------------------------------------------------------------------
    def start(self) -> NetnsCluster:
        atexit.register(self.remove)
        self.state_dir.mkdir(parents=True)
        self.checkpoints.mkdir(parents=True)
        _sh("ip", "netns", "add", self.switch)
        self._made_ns.append(self.switch)
        sw = ["ip", "-n", self.switch]
        _sh(*sw, "link", "add", "br0", "type", "bridge")
        _sh(*sw, "link", "set", "br0", "up")
        for i, h in enumerate(self.hosts):
            _sh("ip", "netns", "add", h.netns)
            self._made_ns.append(h.netns)
            # Made inside the switch namespace, so no link ever appears in the machine's own.
            _sh(*sw, "link", "add", h.veth, "type", "veth", "peer", "name", "eth0", "netns", h.netns)
            _sh(*sw, "link", "set", h.veth, "master", "br0")
            _sh(*sw, "link", "set", h.veth, "up")
            hn = ["ip", "-n", h.netns]
            _sh(*hn, "addr", "add", f"{h.ip}/24", "dev", "eth0")
            _sh(*hn, "link", "set", "eth0", "up")
            _sh(*hn, "link", "set", "lo", "up")
            h.holder = self._hold(h, head=i == 0)
        self._ray_start(self.hosts[0], head=True)
        # Each host has its own /tmp (Ray's session files): the workers start side by side.
        with ThreadPoolExecutor(max(1, len(self.hosts) - 1)) as pool:
            list(pool.map(lambda h: self._ray_start(h, head=False), self.hosts[1:]))
        return self

    def _hold(self, h: Host, head: bool) -> subprocess.Popen[bytes]:
        """A process in the host's namespaces whose mount namespace has a private /tmp and state folder."""
        mounts = ["mount --make-rprivate /", "mount -t tmpfs -o size=2g tmpfs /tmp"]
        if not head:
            mounts.append(f"mount -t tmpfs -o size=1g tmpfs {shlex.quote(str(self.state_dir))}")
        script = " && ".join(mounts) + " && echo ready && exec sleep infinity"
        p = subprocess.Popen(["ip", "netns", "exec", h.netns, "unshare", "--mount", "sh", "-c", script],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True)
        assert p.stdout is not None
        line = p.stdout.readline()
        if line.strip() != b"ready":
            raise RuntimeError(f"host {h.name}: mount namespace not ready: {p.stderr.read().decode()[:500]}")
        # The holder is `sleep` once exec'd: the pid to enter.
        return p

    def env(self, host: Host | None = None) -> dict[str, str]:
        env = dict(os.environ)
        env["PATH"] = f"{BIN}:{env.get('PATH', '')}"
        env["PYTHONPATH"] = str(REPO)
        env["ORCHESTRATOR_HOME"] = str(self.state_dir)
        # Token auth across namespaces: the token is ~/.ray/auth_token, which every host sees (root's
        # home is not private to a host), so every node and client agrees on it.
        env.setdefault("RAY_AUTH_MODE", "token")
        env.pop("RAY_ADDRESS", None)
        env.update(NODE_DEATH_ENV)
        if host is not None:
            env.update(host.env)
        return env

    def enter(self, host: Host) -> list[str]:
        """Command prefix that runs in the host's network and mount namespaces."""
        assert host.holder is not None
        return ["nsenter", "-t", str(host.holder.pid), "-n", "-m", "--"]

    def run(self, host: Host, args: list[str], env: dict[str, str] | None = None,
            timeout_s: float = 300) -> subprocess.CompletedProcess[str]:
        return subprocess.run([*self.enter(host), *args], env={**self.env(host), **(env or {})},
                              capture_output=True, text=True, timeout=timeout_s)

    def popen(self, host: Host, args: list[str], log: Path, env: dict[str, str] | None = None
              ) -> subprocess.Popen[bytes]:
        return subprocess.Popen([*self.enter(host), *args], env={**self.env(host), **(env or {})},
                                stdout=open(log, "wb"), stderr=subprocess.STDOUT,  # noqa: SIM115
                                start_new_session=True)

    def _ray_start(self, h: Host, head: bool) -> None:
        args = [RAY, "start", f"--num-cpus={h.cpus}", f"--node-ip-address={h.ip}", "--labels", f"host={h.name}",
                "--disable-usage-stats"]
        args += (["--head", f"--port={GCS_PORT}", "--include-dashboard=false"] if head
                 else [f"--address={self.address}"])
        for tries_left in (1, 0):
            r = self.run(h, args, timeout_s=180)
            if r.returncode == 0:
                return
            # Ray gives a node 30 s to register (not configurable); a loaded machine can miss that.
            if tries_left:
                self._kill_all_but_holder(h)
        raise RuntimeError(f"ray start on {h.name} failed: {r.stdout[-1500:]} {r.stderr[-1500:]}")

    def _kill_all_but_holder(self, h: Host) -> None:
        pids = [p for p in self.pids(h) if h.holder is None or p != h.holder.pid]
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        deadline = time.time() + 10
        while time.time() < deadline and any(_running(p) for p in pids):
            time.sleep(0.2)

    # ---- looking up ----------------------------------------------------------------------
    @property
    def head(self) -> Host:
        return self.hosts[0]

    def host(self, name: str) -> Host:
        return next(h for h in self.hosts if h.name == name)

    def pids(self, h: Host) -> list[int]:
        r = _sh("ip", "netns", "pids", h.netns, check=False)
        return [int(p) for p in r.stdout.split()]

    def raylet_pid(self, h: Host) -> int:
        for pid in self.pids(h):
            try:
                exe = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")[0]
            except OSError:
                continue
            if exe.endswith(b"/raylet/raylet"):
                return pid
        raise LookupError(f"no raylet on host {h.name}")

    # ---- faults --------------------------------------------------------------------------
    def link(self, h: Host, up: bool) -> None:
        """Take the host's cable out (or put it back): its switch port goes down."""
        _sh("ip", "-n", self.switch, "link", "set", h.veth, "up" if up else "down")

    def throttle(self, h: Host, rate: str | None, latency_ms: int = 400) -> None:
        """Make the host's link a crawl (a token bucket on both directions), or restore it (rate None)."""
        for ns, dev in ((self.switch, h.veth), (h.netns, "eth0")):
            tc = ["ip", "netns", "exec", ns, "tc", "qdisc"]
            _sh(*tc, "del", "dev", dev, "root", check=False)
            if rate is not None:
                _sh(*tc, "add", "dev", dev, "root", "tbf", "rate", rate, "burst", "4kb", "latency", f"{latency_ms}ms")

    # ---- removing ------------------------------------------------------------------------
    def stop_hosts(self, hosts: list[Host], grace_s: float = 2.0) -> None:
        """Stop every process of the hosts by pid (their namespaces tell which), all hosts at once: SIGTERM,
        SIGKILL after `grace_s` (Ray's gcs_server and raylets outlast longer graces anyway)."""
        for sig in (signal.SIGTERM, signal.SIGKILL):
            for h in hosts:
                for pid in self.pids(h):
                    with contextlib.suppress(ProcessLookupError):
                        os.kill(pid, sig)
            deadline = time.time() + grace_s
            while time.time() < deadline and any(_running(p) for h in hosts for p in self.pids(h)):
                time.sleep(0.2)
        for h in hosts:
            if h.holder is not None:
                with contextlib.suppress(Exception):
                    h.holder.wait(timeout=5)

    def remove(self) -> None:
        """Stop every host's processes, delete namespaces (their links and mounts go with them) and folders."""
        with contextlib.suppress(Exception):
            self.stop_hosts([h for h in self.hosts if h.netns in self._made_ns])
        for ns in reversed(self._made_ns):
            _sh("ip", "netns", "del", ns, check=False)
        self._made_ns.clear()
        shutil.rmtree(self.base, ignore_errors=True)
        with contextlib.suppress(Exception):
            atexit.unregister(self.remove)


def skewed_clock(folder: Path, seconds: int) -> dict[str, str] | None:
    """Environment that sets a host's wall clock `seconds` off (tests/skewclock.c, built into `folder`), or None
    when no C compiler is here.

    Not libfaketime: Debian's 0.9.10 either fakes the monotonic clock too (Python's timed waits then never
    return) or, with FAKETIME_DONT_FAKE_MONOTONIC=1, makes every `time.sleep` fail with EINVAL. A host whose
    clock is set wrong keeps a true monotonic clock, which is what this shifts and leaves alone.
    """
    cc = shutil.which("cc") or shutil.which("gcc")
    if cc is None:
        return None
    lib = folder / "skewclock.so"
    _sh(cc, "-shared", "-fPIC", "-O2", "-o", str(lib), str(Path(__file__).with_name("skewclock.c")), "-ldl")
    return {"LD_PRELOAD": str(lib), "SKEW_CLOCK_S": str(int(seconds))}


def _running(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return False


@contextmanager
def netns_cluster(hosts: list[tuple[str, int]], **kw: object) -> Iterator[NetnsCluster]:
    """Hosts (Ray `host` label, CPUs), the first is the head; everything made is removed on exit."""
    c = NetnsCluster(hosts, **kw)  # type: ignore[arg-type]
    try:
        yield c.start()
    finally:
        c.remove()
