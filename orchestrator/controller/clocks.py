"""How far each node's clock is from the controller's, so that times written on different hosts compare.

Every host has its own clock, and a host's clock may be off by seconds or
days. A node agent stamps its report with its own time; the controller notes
when it asked and when the answer came, and takes the node's offset from the
fastest round trip among recent ones (the minimum filter of NTP): the error is
at most half that round trip, whatever the host's clock says.
"""

from __future__ import annotations

from collections import deque

WINDOW = 32
"""Round trips remembered per node (a few seconds of polling): a clock that is stepped is followed soon."""


class ClockOffsets:
    def __init__(self, window: int = WINDOW) -> None:
        self.window = window
        self._samples: dict[str, deque[tuple[float, float]]] = {}

    def add(self, node: str, sent: float, received: float, remote_time: float) -> float:
        """Note one round trip (`sent`, `received` on our clock; `remote_time` on the node's); the offset now."""
        q = self._samples.setdefault(node, deque(maxlen=self.window))
        q.append((max(0.0, received - sent), remote_time - (sent + received) / 2))
        return min(q)[1]

    def offset(self, node: str) -> float:
        """The node's clock minus ours, in seconds (0 before any round trip)."""
        q = self._samples.get(node)
        return min(q)[1] if q else 0.0

    def forget(self, node: str) -> None:
        self._samples.pop(node, None)
