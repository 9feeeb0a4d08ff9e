"""Where a job's in-memory snapshots live on each host, and what the controller records of a resume.

The folder is the same for every attempt of one submission (a restart finds the snapshots
of the attempt before) and differs between submissions (`submit --fresh` must not resume
from the snapshots of the run it replaces), so it is keyed by the job's name, its
checkpoint folder and the time it was submitted.
"""

from __future__ import annotations

import hashlib
import re
from datetime import datetime
from pathlib import Path
from typing import Any

from health.observations import RankObservation
from trainer.snapshot_files import SHM_ROOT


def snapshot_dir(job: str, checkpoint_dir: str | Path, submitted_at: datetime | None,
                 root: Path = SHM_ROOT) -> str:
    """The job's snapshot folder (the same path on every host)."""
    ident = f"{job}\0{Path(checkpoint_dir).resolve()}\0{submitted_at.isoformat() if submitted_at else ''}"
    safe = re.sub(r"[^A-Za-z0-9_.-]", "_", job)[:63]
    return str(root / f"{safe}-{hashlib.sha256(ident.encode()).hexdigest()[:12]}")


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
