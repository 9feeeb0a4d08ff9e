"""The health agent of one node: watches its ranks, aggregates for the controller.

One agent per node (a Ray actor pinned there) polls the supervisors of the
node's ranks a few times a second, turns what it sees into observations, runs
the node-local detectors, and hands the controller one compact report per
node, so a 2,048-node job costs the controller 2,048 small calls per round,
not one per rank.
"""

from __future__ import annotations

import threading
import time
from typing import Any

from health.detectors import detect_crash
from health.observations import Finding, RankObservation, observation_from_poll

POLL_INTERVAL_S = 0.25


class NodeAgent:
    def __init__(self, host: str, poll_interval_s: float = POLL_INTERVAL_S) -> None:
        self.host = host
        self.poll_interval_s = poll_interval_s
        self._workers: dict[int, Any] = {}
        self._generation = 0
        """Bumped by every watch(): a poll begun before it must not report into the new attempt."""
        self._obs: dict[int, RankObservation] = {}
        self._findings: list[Finding] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

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

    def shutdown(self) -> None:
        self._stop.set()

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
