"""The health agent of one node: watches its ranks, aggregates for the controller.

One agent per node (a Ray actor pinned there) polls the supervisors of the
node's ranks a few times a second, turns what it sees into observations, runs
the node-local detectors, and hands the controller one compact report per
node, so a 2,048-node job costs the controller 2,048 small calls per round,
not one per rank.

It also runs the host's probes (GPUs through NVML, kernel log, EDAC, BMC,
checkpoint storage) every `PROBE_INTERVAL_S` while ranks train and on demand
(preflight, evidence after an interruption). A `fail` becomes a BAD_GPU
finding naming this host; the non-ok results are kept, time-ordered, as the
evidence the controller attaches for the classifier.
"""

from __future__ import annotations

import os
import threading
import time
from collections import deque
from collections.abc import Callable
from typing import Any

from health.detectors import detect_crash
from health.link_probe import measure
from health.observations import Finding, FindingKind, RankObservation, observation_from_poll
from health.probes.base import Probe, ProbeResult, Severity, run_probes
from health.probes.suite import bad_gpu_finding, host_probes, nvml_adapter

POLL_INTERVAL_S = 0.25
PROBE_INTERVAL_S = 30.0
"""How often the probes run while ranks train (ORCHESTRATOR_PROBE_INTERVAL_S overrides it, for drills and tests)."""
ENV_PROBE_INTERVAL = "ORCHESTRATOR_PROBE_INTERVAL_S"
PROBE_DEADLINE_S = 20.0
"""All probes of one round together (each also has its own, shorter limit)."""
EVIDENCE_KEEP = 200


class NodeAgent:
    def __init__(self, host: str, poll_interval_s: float = POLL_INTERVAL_S, *, run_dir: str | None = None,
                 checkpoint_dir: str | None = None, probes: Callable[[], list[Probe]] | None = None,
                 probe_interval_s: float | None = None, since: float | None = None) -> None:
        self.host = host
        self.poll_interval_s = poll_interval_s
        self.probe_interval_s = probe_interval_s or float(os.environ.get(ENV_PROBE_INTERVAL) or PROBE_INTERVAL_S)
        self.since = time.time() if since is None else since
        self._make_probes = probes or self._default_probes(run_dir, checkpoint_dir)
        self._probe_set: list[Probe] | None = None
        self._evidence: deque[ProbeResult] = deque(maxlen=EVIDENCE_KEEP)
        self._probe_lock = threading.Lock()
        """One probe round at a time."""
        self._evidence_lock = threading.Lock()
        self._probed_at = 0.0
        self._workers: dict[int, Any] = {}
        self._generation = 0
        """Bumped by every watch(): a poll begun before it must not report into the new attempt."""
        self._obs: dict[int, RankObservation] = {}
        self._findings: list[Finding] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def _default_probes(self, run_dir: str | None, checkpoint_dir: str | None) -> Callable[[], list[Probe]]:
        def make() -> list[Probe]:
            try:
                import ray

                node_id = ray.get_runtime_context().get_node_id()
            except Exception:  # outside Ray (tests, tools): one host, one folder
                node_id = self.host
            return host_probes(adapter=nvml_adapter(run_dir, node_id), checkpoint_dir=checkpoint_dir,
                               since=self.since)
        return make

    def probe(self, deadline_s: float = PROBE_DEADLINE_S) -> list[dict[str, Any]]:
        """Run every probe now (preflight, or on demand); every result, time-ordered, as dicts."""
        with self._probe_lock:
            if self._probe_set is None:
                self._probe_set = self._make_probes()
            results = run_probes(self._probe_set, self.host, deadline_s)
            self._probed_at = time.time()
        with self._evidence_lock:
            seen = {(r.source, r.message) for r in self._evidence}
            self._evidence.extend(r for r in results
                                  if r.severity is not Severity.OK and (r.source, r.message) not in seen)
        finding = bad_gpu_finding(results, self.host, time.time(), tuple(sorted(self._workers)))
        if finding is not None:
            with self._lock:
                if self._workers and not any(f.kind is FindingKind.BAD_GPU for f in self._findings):
                    self._findings.append(finding)
        return [r.to_dict() for r in results]

    def evidence(self, since: float = 0.0) -> list[dict[str, Any]]:
        """The warn and fail results seen since `since`, time-ordered, each with host and source."""
        with self._evidence_lock:
            return [r.to_dict() for r in sorted(self._evidence, key=lambda r: r.at) if r.at >= since]

    def watch(self, workers: dict[int, Any]) -> str:
        """Start watching these ranks (rank -> RankWorker handle); replaces earlier ones."""
        with self._lock:
            self._workers = dict(workers)
            self._generation += 1
            self._obs.clear()
            self._findings.clear()
        if self._thread is None:
            self._thread = threading.Thread(target=self._loop, name="agent", daemon=True)
            self._thread.start()
            threading.Thread(target=self._probe_loop, name="agent-probes", daemon=True).start()
        return self.host

    def unwatch(self) -> None:
        with self._lock:
            self._workers = {}
            self._generation += 1
            self._obs.clear()

    def report(self) -> dict[str, Any]:
        with self._lock:
            return {"host": self.host, "observations": list(self._obs.values()),
                    "findings": list(self._findings), "time": time.time()}

    def link_probe(self, address: str, port: int, payload_bytes: int, timeout_s: float) -> dict[str, Any]:
        """A round trip and a small transfer to the controller's node, timed on this host's clock."""
        return {**measure(address, port, payload_bytes, timeout_s), "host": self.host}

    def shutdown(self) -> None:
        self._stop.set()

    def _probe_loop(self) -> None:
        """Probes while ranks train: never on the rank-polling thread, so a slow probe delays no report."""
        while not self._stop.wait(min(1.0, self.probe_interval_s)):
            with self._lock:
                watching = bool(self._workers)
            if watching and time.time() - self._probed_at >= self.probe_interval_s:
                try:
                    self.probe()
                except Exception:  # a broken probe set must not take the agent down
                    self._probed_at = time.time()

    def _loop(self) -> None:
        import ray

        while not self._stop.wait(self.poll_interval_s):
            with self._lock:
                workers, generation = dict(self._workers), self._generation
            if not workers:
                continue
            refs = {r: w.poll.remote() for r, w in workers.items()}
            now = time.time()
            obs: dict[int, RankObservation] = {}
            for rank, ref in refs.items():
                try:
                    poll = ray.get(ref, timeout=10)
                except (ray.exceptions.RayActorError, ray.exceptions.GetTimeoutError):
                    prev = self._obs.get(rank)
                    poll = {"rank": rank, "running": False, "worker_alive": False,
                            "beacon": None if prev is None else {"step": prev.step, "time": prev.heartbeat}}
                obs[rank] = observation_from_poll(poll, self.host, now)
            crash = detect_crash(list(obs.values()), now)
            with self._lock:
                if generation != self._generation:
                    continue  # re-targeted while polling
                self._obs = obs
                if crash is not None and not any(f.kind == crash.kind for f in self._findings):
                    self._findings.append(crash)
