"""Progress beacons a rank publishes for the health agents.

Two sources feed the beacon: the training loop (step, step time, the time the
rank became ready to communicate for each step, the members of every process
group it belongs to) and a background thread that, every second, reads the
process groups' collective progress from torch's flight recorder (last
enqueued and last completed collective per process group, and the kind of the
last one) plus the pipeline's point-to-point progress, which the flight
recorder does not show on gloo (see `RankProgress`). The recorder read is the
backend's own (NCCL's on NCCL, gloo's on gloo: `trainer/flight_recorder.py`),
and the beacon says when it is off, empty or unreadable. Because the thread keeps
running while the main thread is blocked in a collective, a rank stuck waiting
still heartbeats and says where it waits; a rank whose beacons stop altogether
is frozen or dead.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections import deque
from collections.abc import Callable
from typing import Any

from trainer.flight_recorder import (
    BUFFER_ENV,
    EMPTY,
    OFF,
    UNREADABLE,
    RecorderProgress,
    RecorderUnavailable,
    buffer_size,
    parse_flight_record,
    read_dump,
)

logger = logging.getLogger(__name__)

READY_HISTORY = 32
"""Steps of (step, ready_at) kept in the beacon for straggler detection."""


_PG_NAMES: dict[str, tuple[str, str]] = {}
"""Flight-recorder pg id (local to the process) -> (group name, description), learned from its entries.

The id is the same for different groups (every TP group of a job is id 4, say);
the name is what tells them apart across ranks, so progress is keyed by name.
"""


def current_backend() -> str:
    """The default process group's backend ('nccl', 'gloo', ...), '' before the process group exists."""
    import torch.distributed as dist

    if not dist.is_available() or not dist.is_initialized():
        return ""
    return str(dist.get_backend())


class RecorderReader:
    """Reads the flight recorder of the backend in use; says once in the log when it is off or cannot be read.

    The beacon carries the recorder's state (`recorder`), so the hang finding
    can say that its evidence had no flight record behind it.
    """

    def __init__(self, backend: Callable[[], str] = current_backend) -> None:
        self.backend = backend
        self._warned: set[str] = set()
        self.names: dict[str, tuple[str, str]] = _PG_NAMES

    def _warn_once(self, key: str, msg: str, *args: Any) -> None:
        if key not in self._warned:
            self._warned.add(key)
            logger.warning(msg, *args)

    def read(self, group_ranks: dict[str, list[int]] | None = None, rank: int | None = None) -> RecorderProgress:
        backend = self.backend()
        if not backend:
            return RecorderProgress(recorder={"backend": "", "state": EMPTY, "entries": 0,
                                              "detail": "no process group yet"})
        if buffer_size() <= 0:
            var = next((v for v in BUFFER_ENV if os.environ.get(v, "") != ""), BUFFER_ENV[0])
            detail = f"{var}={os.environ.get(var)}"
            self._warn_once("off", "flight recorder is off (%s): a hang finding will not know which collective "
                            "or transfer this rank waits in", detail)
            return RecorderProgress(recorder={"backend": backend, "state": OFF, "entries": 0, "detail": detail})
        try:
            dump = read_dump(backend)
        except RecorderUnavailable as e:
            self._warn_once("unreadable", "cannot read the %s flight recorder: %s", backend, e)
            return RecorderProgress(recorder={"backend": backend, "state": UNREADABLE, "entries": 0,
                                              "detail": str(e)})
        got = parse_flight_record(dump, self.names, rank=rank, group_ranks=group_ranks)
        got.recorder["backend"] = backend
        return got


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
    """Publishes collective progress and a heartbeat every `interval_s` seconds.

    Pipeline transfers come from the flight recorder where it records them
    (NCCL: there the CPU does not block in a receive, so the stage's own
    counts would say it has its data when its GPU does not), and from
    `RankProgress` otherwise (gloo).
    """

    def __init__(self, publish: Callable[[dict[str, Any]], None], interval_s: float = 1.0,
                 progress: RankProgress | None = None, reader: RecorderReader | None = None) -> None:
        self.publish, self.interval_s, self.progress = publish, interval_s, progress
        self.reader = reader or RecorderReader()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="beacon", daemon=True)

    def start(self) -> BeaconThread:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()

    def update(self) -> dict[str, Any]:
        """One beacon update: collective progress, the recorder's state, pipeline transfers, heartbeat."""
        # The training loop publishes its groups' global ranks into the same beacon (BeaconFile.state).
        groups = (getattr(self.publish, "state", None) or {}).get("groups") or {}
        rank = (getattr(self.publish, "state", None) or {}).get("rank")
        fr = self.reader.read({str(k): list(g.get("ranks", ())) for k, g in groups.items()}, rank)
        update: dict[str, Any] = {"collectives": fr.collectives, "recorder": fr.recorder, "heartbeat": time.time()}
        if self.progress is not None:
            update.update(self.progress.snapshot())
        if fr.p2p is not None:
            update["p2p"] = fr.p2p
        return update

    def _run(self) -> None:
        while not self._stop.wait(self.interval_s):
            try:
                self.publish(self.update())
            except Exception:
                logger.exception("beacon publish failed")
