"""The snapshot folder's layout and the choice of the step to resume from, without torch.

Snapshots live in node-local memory (`/dev/shm`), one folder per rank, so that they
outlive the rank's process (and its supervisor) but not the host:

    <root>/rank-RRRRR/step-NNNNNNNN.pt    the rank's own shard of the training state (torch.save)
    <root>/rank-RRRRR/step-NNNNNNNN.json  its commit marker: step, layout key, size and sha256 of the .pt

The .pt is written under a temporary name and renamed; the marker is written after it
the same way, so a snapshot without its marker (a write cut short) does not exist.
The supervisor that copies snapshots between hosts reads this module, not torch.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import re
import shutil
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

logger = logging.getLogger(__name__)

SHM_ROOT = Path("/dev/shm/orchestrator-snapshots")
"""Where a job's snapshots go unless its configuration names another folder."""
KEEP = 2
"""Snapshots kept per rank: the newest, and the one before it while the newest is written."""
_STEP_RE = re.compile(r"^step-(\d{8})\.json$")


@dataclass(frozen=True, slots=True)
class SnapshotMeta:
    """One committed snapshot of one rank."""

    step: int
    rank: int
    layout: str
    """Key of the layout and model it was taken under: it loads only under the same one."""
    size: int
    sha256: str
    time: float

    def to_dict(self) -> dict[str, Any]:
        return {"step": self.step, "rank": self.rank, "layout": self.layout, "size": self.size,
                "sha256": self.sha256, "time": self.time}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> SnapshotMeta:
        return cls(int(d["step"]), int(d["rank"]), str(d["layout"]), int(d["size"]), str(d["sha256"]),
                   float(d.get("time", 0.0)))


def rank_dir(root: str | os.PathLike[str], rank: int) -> Path:
    return Path(root) / f"rank-{rank:05d}"


def data_path(folder: Path, step: int) -> Path:
    return folder / f"step-{step:08d}.pt"


def marker_path(folder: Path, step: int) -> Path:
    return folder / f"step-{step:08d}.json"


def layout_key(parts: dict[str, Any]) -> str:
    """A short digest of what must match for a snapshot to load: world size, parallel layout, model, dtype."""
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:16]


def list_snapshots(folder: Path) -> list[SnapshotMeta]:
    """The committed snapshots in one rank's folder, oldest first (unreadable markers are skipped)."""
    out: list[SnapshotMeta] = []
    try:
        names = os.listdir(folder)
    except OSError:
        return out
    for name in names:
        m = _STEP_RE.match(name)
        if m is None:
            continue
        try:
            meta = SnapshotMeta.from_dict(json.loads((folder / name).read_text()))
        except (OSError, ValueError, KeyError, TypeError) as e:
            logger.warning("snapshot marker %s/%s is unreadable, ignoring it: %s", folder, name, e)
            continue
        if meta.step == int(m.group(1)) and data_path(folder, meta.step).is_file():
            out.append(meta)
    return sorted(out, key=lambda s: s.step)


def choose_step(per_rank: Sequence[dict[int, str]], layout: str, committed_step: int) -> int | None:
    """The newest step every rank holds a snapshot of under `layout`, if it is newer than the newest
    committed checkpoint; None means: resume from the checkpoint.

    `per_rank[r]` maps the steps rank r can provide to the layout key each was taken under.
    """
    if not per_rank:
        return None
    common = set.intersection(*({s for s, key in have.items() if key == layout} for have in per_rank))
    newer = [s for s in common if s > committed_step]
    return max(newer) if newer else None


def write_atomic(path: Path, data: bytes | memoryview) -> None:
    """Write under a temporary name in the same folder, then rename into place."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with open(tmp, "wb") as f:
            f.write(data)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise


def commit(folder: Path, meta: SnapshotMeta, data: bytes | memoryview) -> None:
    """Write one snapshot: its data, then its marker (the snapshot exists once the marker does)."""
    folder.mkdir(parents=True, exist_ok=True)
    write_atomic(data_path(folder, meta.step), data)
    write_atomic(marker_path(folder, meta.step), json.dumps(meta.to_dict()).encode())


def remove(folder: Path, step: int) -> None:
    """Drop one snapshot, marker first (so it never looks committed without its data)."""
    for p in (marker_path(folder, step), data_path(folder, step)):
        with contextlib.suppress(FileNotFoundError):
            p.unlink()


def prune(folder: Path, keep: int = KEEP, above: int | None = None) -> None:
    """Keep the newest `keep` snapshots; with `above`, first drop every snapshot newer than that step
    (after a resume or a rollback to it they belong to another history)."""
    snaps = list_snapshots(folder)
    if above is not None:
        for s in snaps:
            if s.step > above:
                remove(folder, s.step)
        snaps = [s for s in snaps if s.step <= above]
    for s in snaps[:-keep] if keep else snaps:
        remove(folder, s.step)
    with contextlib.suppress(OSError):  # abandoned temporaries of a killed writer
        for p in folder.glob(".step-*.tmp"):
            p.unlink()


def read_verified(folder: Path, meta: SnapshotMeta) -> bytes:
    """The snapshot's bytes, after checking their size and sha256 against its marker; raises OSError otherwise."""
    data = data_path(folder, meta.step).read_bytes()
    if len(data) != meta.size:
        raise OSError(f"snapshot {folder.name}/step-{meta.step:08d}.pt has {len(data)} bytes, marker says {meta.size}")
    got = hashlib.sha256(data).hexdigest()
    if got != meta.sha256:
        raise OSError(f"snapshot {folder.name}/step-{meta.step:08d}.pt: sha256 {got[:16]}, marker says "
                      f"{meta.sha256[:16]}")
    return data


# ---- copies between hosts (read by the rank supervisors; no torch) ---------------------------------------------
HELD = "held"
"""`<host root>/held/rank-RRRRR/`: copies of another host's ranks' snapshots, kept for when that host is lost."""


def host_root(snapshot_dir: str | os.PathLike[str], host: str) -> Path:
    """One host's part of the job's snapshot folder. Hosts have their own memory; naming the host in the
    path also keeps apart the nodes of a test cluster that share one machine's /dev/shm."""
    return Path(snapshot_dir) / f"host-{re.sub(r'[^A-Za-z0-9_.-]', '_', host)[:100]}"


def remove_job_folder(snapshot_dir: Path) -> None:
    """Remove a job's snapshot folder from this host once the job is over. Only a folder holding nothing but
    host folders is removed: a mistaken path never takes anything else with it."""
    if not snapshot_dir.is_dir():
        return
    if any(not (p.is_dir() and p.name.startswith("host-")) for p in snapshot_dir.iterdir()):
        raise OSError(f"{snapshot_dir} holds more than host snapshot folders: not removed")
    shutil.rmtree(snapshot_dir, ignore_errors=True)


def folder_of(root: Path, kind: str, rank: int) -> Path:
    """A rank's own snapshots (`local`) or the copies this host holds for it (`held`)."""
    return rank_dir(root / HELD if kind == HELD else root, rank)


def inventory(root: Path) -> dict[str, dict[int, dict[int, dict[str, Any]]]]:
    """What one host can provide: {"local"|"held": {rank: {step: marker}}}."""
    out: dict[str, dict[int, dict[int, dict[str, Any]]]] = {"local": {}, HELD: {}}
    for kind, base in (("local", root), (HELD, root / HELD)):
        try:
            names = os.listdir(base)
        except OSError:
            continue
        for name in names:
            m = re.match(r"^rank-(\d+)$", name)
            if m is None:
                continue
            snaps = list_snapshots(base / name)
            if snaps:
                out[kind][int(m.group(1))] = {s.step: s.to_dict() for s in snaps}
    return out


def read_snapshot(root: Path, kind: str, rank: int, step: int) -> tuple[dict[str, Any], bytes]:
    """A snapshot's marker and checked bytes, to send to another host."""
    folder = folder_of(root, kind, rank)
    meta = next((s for s in list_snapshots(folder) if s.step == step), None)
    if meta is None:
        raise FileNotFoundError(f"no snapshot of step {step} in {folder}")
    return meta.to_dict(), read_verified(folder, meta)


def install(root: Path, kind: str, rank: int, marker: dict[str, Any], data: bytes, keep: int = KEEP) -> None:
    """Store a snapshot received from another host (checked against its marker first), newest `keep` kept."""
    meta = SnapshotMeta.from_dict(marker)
    if len(data) != meta.size or hashlib.sha256(data).hexdigest() != meta.sha256:
        raise OSError(f"snapshot of rank {rank} step {meta.step} arrived damaged ({len(data)} bytes)")
    folder = folder_of(root, kind, rank)
    commit(folder, meta, data)
    prune(folder, keep)
