"""Fan-out over many Ray calls with one deadline for all of them.

Waiting on each reference in turn with its own timeout makes every hung node
cost another timeout; here a whole round (poll 2,048 node agents, stop 16,384
ranks) costs at most one.
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping
from typing import Any, TypeVar

import ray

K = TypeVar("K", bound=Hashable)


class CallTimeout(TimeoutError):
    """The call had not answered when the round's deadline passed."""


def gather(refs: Mapping[K, Any], timeout_s: float) -> dict[K, Any]:
    """Each key's result, or the exception its call raised (CallTimeout when it did not answer in time)."""
    if not refs:
        return {}
    ready, _ = ray.wait(list(refs.values()), num_returns=len(refs), timeout=timeout_s)
    done = set(ready)
    out: dict[K, Any] = {}
    for key, ref in refs.items():
        if ref not in done:
            out[key] = CallTimeout(f"no answer within {timeout_s:g} s")
            continue
        try:
            out[key] = ray.get(ref)
        except Exception as e:  # the remote call's own failure, reported per key
            out[key] = e
    return out


def call_all(handles: Mapping[K, Any], method: str, *args: Any, timeout_s: float, **kwargs: Any) -> dict[K, Any]:
    """Call `method` on every actor handle at once; results as in `gather`."""
    refs = {}
    for key, h in handles.items():
        try:
            refs[key] = getattr(h, method).remote(*args, **kwargs)
        except Exception:  # a handle whose actor is already gone
            refs[key] = None
    live = {k: r for k, r in refs.items() if r is not None}
    out = gather(live, timeout_s)
    for k, r in refs.items():
        if r is None:
            out[k] = ray.exceptions.RayActorError()
    return out
