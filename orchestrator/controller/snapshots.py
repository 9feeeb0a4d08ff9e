"""Where a job's in-memory snapshots live on each host, which host keeps a copy of whose, what to copy
before a restart, and what the controller records of a resume.

The folder is the same for every attempt of one submission (a restart finds the snapshots
of the attempt before) and differs between submissions (`submit --fresh` must not resume
from the snapshots of the run it replaces), so it is keyed by the job's name, its
checkpoint folder and the time it was submitted.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from health.observations import RankObservation
from orchestrator.controller.callbacks import RankPlacement
from trainer.snapshot_files import HELD, KEEP, SHM_ROOT


def snapshot_dir(job: str, checkpoint_dir: str | Path, submitted_at: datetime | None,
                 root: Path = SHM_ROOT) -> str:
    """The job's snapshot folder (the same path on every host)."""
    ident = f"{job}\0{Path(checkpoint_dir).resolve()}\0{submitted_at.isoformat() if submitted_at else ''}"
    safe = re.sub(r"[^A-Za-z0-9_.-]", "_", job)[:63]
    return str(root / f"{safe}-{hashlib.sha256(ident.encode()).hexdigest()[:12]}")


def note_snapshot(layout: dict[str, Any], obs: list[RankObservation], world_size: int) -> bool:
    """Record in the attempt's layout the newest snapshot step every rank holds (`snapshot_step`), the step a
    restart under this layout could resume from; True when it moved. Ranks not heard from hold nothing."""
    steps = [o.snapshot_step for o in obs]
    if len(obs) < world_size or any(s is None for s in steps):
        return False
    held = min(s for s in steps if s is not None)
    if held <= int(layout.get("snapshot_step") or 0):
        return False
    layout["snapshot_step"] = held
    return True


def snapshot_cost(obs: list[RankObservation]) -> tuple[float, float] | None:
    """(seconds the loop waits per snapshot, seconds a snapshot's write takes) of the costliest rank this attempt,
    from the ranks' running totals; None before any rank took one. The slowest rank sets the pace."""
    costs = [(float(o.snapshots.get("blocked_s", 0.0)) / n, float(o.snapshots.get("write_s", 0.0)) / n)
             for o in obs if (n := int(o.snapshots.get("count") or 0)) > 0]
    if not costs:
        return None
    return max(c[0] for c in costs), max(c[1] for c in costs)


def note_resume(layout: dict[str, Any], obs: list[RankObservation]) -> bool:
    """Put what the attempt's ranks resumed from (kind: snapshot or checkpoint, step, path) into its layout
    record, once; True when it did. The ranks agree on it; the lowest rank that says so is read."""
    if "resumed_from" in layout:
        return False
    for o in sorted(obs, key=lambda o: o.rank):
        r = o.resumed
        if r.get("kind") in ("snapshot", "checkpoint"):
            layout["resumed_from"] = {"kind": r["kind"], "step": int(r.get("step") or 0),
                                      "path": str(r.get("path") or "")}
            return True
    return False


def peer_ranks(placements: list[RankPlacement]) -> dict[int, int | None]:
    """For each rank, the rank whose supervisor keeps the copy of its snapshots: the rank of the same local
    index on the next host in placement order (wrapping), so that copies spread over that host's ranks.
    None for every rank when the gang is on one host: there is no other memory to copy to."""
    hosts: list[str] = []
    on: dict[str, list[int]] = {}
    for p in sorted(placements, key=lambda p: p.rank):
        if p.host not in on:
            hosts.append(p.host)
            on[p.host] = []
        on[p.host].append(p.rank)
    if len(hosts) < 2:
        return {p.rank: None for p in placements}
    out: dict[int, int | None] = {}
    for i, h in enumerate(hosts):
        nxt = on[hosts[(i + 1) % len(hosts)]]
        for j, r in enumerate(on[h]):
            out[r] = nxt[j % len(nxt)]
    return out


@dataclass(frozen=True, slots=True)
class Transfer:
    """Copy rank `rank`'s snapshot of `step` from host `source` (its own folder there, or the copy it holds)
    into the rank's own folder on host `target`, before the rank starts there."""

    rank: int
    step: int
    source: str
    kind: str
    target: str


def restore_plan(placements: list[RankPlacement], have: dict[str, dict[str, dict[int, dict[int, Any]]]],
                 keep: int = KEEP) -> list[Transfer]:
    """What to copy so that each rank finds, on its (new) host, the newest snapshots any live host holds for it.

    `have[host]` is that host's inventory ({"local"|"held": {rank: {step: marker}}}). A rank that stayed on
    its host needs nothing; one moved to another host (a spare, after its host was lost) gets the newest
    `keep` steps from wherever they are. The trainer then chooses among what every rank holds."""
    out: list[Transfer] = []
    for p in sorted(placements, key=lambda p: p.rank):
        mine = set(have.get(p.host, {}).get("local", {}).get(p.rank, {}))
        where: dict[int, tuple[str, str]] = {}
        for host in sorted(have):
            for kind in ("local", HELD):
                if host == p.host and kind == "local":
                    continue
                for step in have[host].get(kind, {}).get(p.rank, {}):
                    where.setdefault(step, (host, kind))
        for step in sorted(set(where) | mine)[-keep:]:
            if step not in mine:
                out.append(Transfer(p.rank, step, where[step][0], where[step][1], p.host))
    return out
