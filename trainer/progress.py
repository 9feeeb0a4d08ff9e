"""Progress beacons a rank publishes for the health agents.

Two sources feed the beacon: the training loop (step, step time, the time the
rank became ready to communicate for each step) and a background thread that,
every second, reads the process groups' collective progress from torch's
flight recorder (last enqueued and last completed collective per process
group, and the kind of the last one). Because the thread keeps running while
the main thread is blocked in a collective, a rank stuck waiting still
heartbeats and says where it waits; a rank whose beacons stop altogether is
frozen or dead.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections import deque
from collections.abc import Callable
from typing import Any

logger = logging.getLogger(__name__)

READY_HISTORY = 32
"""Steps of (step, ready_at) kept in the beacon for straggler detection."""


def collective_progress() -> dict[str, dict[str, Any]]:
    """Per process group: last enqueued/completed collective sequence number and its kind."""
    try:
        import torch

        dump = json.loads(torch._C._distributed_c10d._dump_fr_trace_json())
    except Exception:  # no flight recorder in this build/backend
        return {}
    out: dict[str, dict[str, Any]] = {}
    for pg, st in (dump.get("pg_status") or {}).items():
        out[pg] = {"enqueued": int(st.get("last_enqueued_collective", -1)),
                   "completed": int(st.get("last_completed_collective", -1)), "op": None}
    for e in dump.get("entries") or []:
        pg = str((e.get("process_group") or ["?"])[0])
        if pg in out and e.get("collective_seq_id") == out[pg]["enqueued"]:
            out[pg]["op"] = e.get("profiling_name")
    return out


class StepReadiness:
    """Ring of (step, time the rank was ready to start the step's collectives)."""

    def __init__(self, maxlen: int = READY_HISTORY) -> None:
        self._ring: deque[tuple[int, float]] = deque(maxlen=maxlen)

    def mark(self, step: int) -> None:
        self._ring.append((step, time.time()))

    def snapshot(self) -> list[list[float]]:
        return [[s, t] for s, t in self._ring]


class BeaconThread:
    """Publishes collective progress and a heartbeat every `interval_s` seconds."""

    def __init__(self, publish: Callable[[dict[str, Any]], None], interval_s: float = 1.0) -> None:
        self.publish, self.interval_s = publish, interval_s
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="beacon", daemon=True)

    def start(self) -> BeaconThread:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()

    def _run(self) -> None:
        while not self._stop.wait(self.interval_s):
            try:
                self.publish({"collectives": collective_progress(), "heartbeat": time.time()})
            except Exception:
                logger.exception("beacon publish failed")
