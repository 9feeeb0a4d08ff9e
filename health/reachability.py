"""Is a lost host still on the network? One TCP connect from the controller's node tells three cases apart.

When a node's agent stops answering, the controller knocks on the port of the
node's Ray process (the raylet) at the node's address:

- refused: the host's kernel answered (a reset), so the host and its link are
  up and only its Ray node is gone (a raylet crash or kill, an agent killed);
- no answer at all while the job's other hosts still answer: the host's link,
  its switch port or the host itself is down. A link that goes down is the
  network (DESIGN.md's taxonomy, rule 6); a host that lost power looks the
  same from outside, so the verdict stays below the cordon confidence and
  the BMC's power events, when there are any, name the cause first;
- accepted: the host and its Ray node are there; the agent alone is stuck.

`knock` does the one connect; `lost_host_evidence` is pure and turns its
result into a probe result the classifier reads like any other.
"""

from __future__ import annotations

import errno
import socket
from typing import Any

REFUSED, SILENT, ANSWERED = "refused", "silent", "answered"
KNOCK_TIMEOUT_S = 2.0
SOURCE = "reachability"


def knock(address: str, port: int, timeout_s: float = KNOCK_TIMEOUT_S) -> str:
    """One TCP connect to `address:port`: REFUSED, SILENT (timed out, no route) or ANSWERED."""
    try:
        with socket.create_connection((address, port), timeout=timeout_s):
            return ANSWERED
    except ConnectionRefusedError:
        return REFUSED
    except OSError as e:
        if e.errno == errno.ECONNREFUSED:
            return REFUSED
        return SILENT


def lost_host_evidence(host: str, address: str, port: int | None, reach: str | None, others_answered: bool,
                       at: float, last_heard_s: float) -> dict[str, Any]:
    """The probe result for a host whose agent did not answer: what its address said, for the classifier.

    `reach`: what `knock` found (None: not knocked, e.g. no address known). `others_answered`: some other
    host of the job answered in the same round, so the controller's own network works. `last_heard_s`:
    seconds since the host's agent last answered.
    """
    where = f"{address}:{port}" if port else address or "its address"
    heard = f"last heard {last_heard_s:.1f} s before"
    if reach == REFUSED:
        msg = (f"host answers on the network but its Ray node is gone: {where} refused a connection; "
               f"{heard}")
        severity = "warn"
    elif reach == SILENT and others_answered:
        msg = (f"host did not answer on the network: no reply from {where} within {KNOCK_TIMEOUT_S:g} s while "
               f"the job's other hosts answered (its link is out, or the host itself); {heard}")
        severity = "fail"
    elif reach == SILENT:
        msg = f"no reply from {where} within {KNOCK_TIMEOUT_S:g} s, and no other host answered either; {heard}"
        severity = "warn"
    elif reach == ANSWERED:
        msg = f"host and its Ray node answer on the network ({where}); only its agent is gone; {heard}"
        severity = "warn"
    else:
        msg = f"host not knocked (no address known); {heard}"
        severity = "warn"
    return {"host": host, "source": SOURCE, "severity": severity, "message": msg, "at": at, "reach": reach}
