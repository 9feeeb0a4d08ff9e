"""Progress beacons a rank publishes for the health agents.

Two sources feed the beacon: the training loop (step, step time, the time the
rank became ready to communicate for each step, the members of every process
group it belongs to) and a background thread that, every second, reads the
process groups' collective progress from torch's flight recorder (last
enqueued and last completed collective per process group, and the kind of the
last one) plus the pipeline's point-to-point progress, which the flight
recorder does not show on gloo (see `RankProgress`). Because the thread keeps
running while the main thread is blocked in a collective, a rank stuck waiting
still heartbeats and says where it waits; a rank whose beacons stop altogether
is frozen or dead.
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


_PG_NAMES: dict[str, tuple[str, str]] = {}
"""Flight-recorder pg id (local to the process) -> (group name, description), learned from its entries.

The id is the same for different groups (every TP group of a job is id 4, say);
the name is what tells them apart across ranks, so progress is keyed by name.
"""


def parse_flight_record(dump: dict[str, Any], names: dict[str, tuple[str, str]] | None = None
                        ) -> dict[str, dict[str, Any]]:
    """Per process group (by name): last enqueued/completed collective sequence number, its kind, the group's desc.

    `names` caches the pg id -> name mapping between dumps, so a group whose
    entries have left the ring buffer keeps its name.
    """
    names = _PG_NAMES if names is None else names
    entries = dump.get("entries") or []
    for e in entries:
        pg = e.get("process_group") or ["?", ""]
        names[str(e.get("pg_id"))] = (str(pg[0]), str(pg[1]) if len(pg) > 1 else "")
    out: dict[str, dict[str, Any]] = {}
    for pg_id, st in (dump.get("pg_status") or {}).items():
        name, desc = names.get(str(pg_id), (f"id:{pg_id}", ""))
        out[name] = {"enqueued": int(st.get("last_enqueued_collective", -1)),
                     "completed": int(st.get("last_completed_collective", -1)), "op": None, "desc": desc}
    for e in entries:
        name = names[str(e.get("pg_id"))][0]
        if name in out and not e.get("is_p2p") and e.get("collective_seq_id") == out[name]["enqueued"]:
            out[name]["op"] = e.get("profiling_name")
    return out


def collective_progress() -> dict[str, dict[str, Any]]:
    """Per process group: last enqueued/completed collective sequence number and its kind."""
    try:
        import torch

        dump = json.loads(torch._C._distributed_c10d._dump_fr_trace_json())
    except Exception:  # no flight recorder in this build/backend
        return {}
    return parse_flight_record(dump)


class RankProgress:
    """Progress the flight recorder does not show: pipeline P2P operations and the rank's place in the step.

    On gloo, torch's flight recorder records collectives only, so the pipeline
    stage counts its own sends and receives per channel (`fwd 0>1`: activations
    from stage 0 to stage 1; `bwd 1>0`: their gradients back). A send counts
    when it is posted; a receive counts when posted and again when its data is
    in use (the stage's compute for that microbatch starts). Counts are
    cumulative over the attempt, so a receiver that posted more receives on a
    channel than its sender posted sends waits for that sender.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._chans: dict[str, dict[str, Any]] = {}
        self._at: tuple[str, float] = ("", 0.0)

    def posted(self, role: str, chan: str, peer: int) -> None:
        with self._lock:
            c = self._chans.setdefault(chan, {"chan": chan, "role": role, "peer": peer, "posted": 0, "done": 0})
            c["posted"] += 1
            if role == "send":
                c["done"] = c["posted"]

    def done(self, chan: str) -> None:
        with self._lock:
            c = self._chans.get(chan)
            if c is not None:
                c["done"] = c["posted"]

    def mark(self, point: str) -> None:
        """Where the rank is in its step (step, forward, backward, collective, p2p)."""
        self._at = (point, time.time())

    def snapshot(self) -> dict[str, Any]:
        with self._lock:
            p2p = [dict(c) for c in self._chans.values()]
        return {"p2p": p2p, "at": self._at[0], "at_time": self._at[1]}


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

    def __init__(self, publish: Callable[[dict[str, Any]], None], interval_s: float = 1.0,
                 progress: RankProgress | None = None) -> None:
        self.publish, self.interval_s, self.progress = publish, interval_s, progress
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
                update = {"collectives": collective_progress(), "heartbeat": time.time()}
                if self.progress is not None:
                    update.update(self.progress.snapshot())
                self.publish(update)
            except Exception:
                logger.exception("beacon publish failed")
