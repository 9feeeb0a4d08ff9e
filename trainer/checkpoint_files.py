"""The checkpoint folder's layout, readable without torch (the CLI and the controller list it too).

    step-NNNNNNNN/                       a committed checkpoint: DCP files plus COMMITTED (JSON: step,
                                         layout, attempt, and the sha256 and size of every file)
    step-NNNNNNNN.quarantined-<ts>/      a committed checkpoint that failed to load, kept for inspection
    step-NNNNNNNN.quarantined-<ts>.json  why it was quarantined
    .tmp-step-NNNNNNNN-a<A>-<nonce>-<k>/ a save being written (removed when it fails)
    .replaced-step-NNNNNNNN-.../         an earlier commit of a step, for the instant it is replaced
"""

from __future__ import annotations

import json
import logging
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

logger = logging.getLogger(__name__)

COMMIT_MARKER = "COMMITTED"
STEP_PREFIX = "step-"
TMP_PREFIX = ".tmp-"
"""Save in progress (or abandoned): `.tmp-step-N-a<attempt>-<nonce>-<k>`."""
REPLACED_PREFIX = ".replaced-"
"""An earlier commit of a step, moved aside for the instant its replacement is renamed in."""
QUARANTINE_TAG = ".quarantined-"
LOUD_AFTER_FAILED_SAVES = 3
"""Consecutive failed save intervals after which every failure is logged as an error."""
HASH = "sha256"
_STEP_RE = re.compile(r"^step-(\d+)$")
ASIDE_RE = re.compile(r"^\.(tmp|replaced)-step-(\d+)-")


@dataclass(frozen=True, slots=True)
class CheckpointInfo:
    step: int
    path: Path
    meta: dict[str, Any]


def step_dir(folder: Path, step: int) -> Path:
    return folder / f"{STEP_PREFIX}{step:08d}"


def scan_checkpoints(folder: Path) -> list[CheckpointInfo]:
    """Committed checkpoints, oldest first; raises OSError when the folder or a marker exists but cannot be read."""
    out: list[CheckpointInfo] = []
    try:
        entries = list(os.scandir(folder))
    except FileNotFoundError:
        return out
    for d in entries:
        m = _STEP_RE.match(d.name)
        if m is None or not d.is_dir():
            continue
        marker = Path(d.path) / COMMIT_MARKER
        try:
            meta = json.loads(marker.read_text())
        except FileNotFoundError:
            continue
        except ValueError as e:  # committed, but the marker is damaged: loading it fails and quarantines it
            logger.warning("checkpoint %s: damaged commit marker: %s", d.path, e)
            meta = {}
        out.append(CheckpointInfo(int(m.group(1)), Path(d.path), meta))
    return sorted(out, key=lambda c: c.step)


def committed_checkpoints(folder: str | os.PathLike[str]) -> list[CheckpointInfo]:
    """Committed checkpoints, oldest first. Safe to call from any process; empty if unreadable."""
    try:
        return scan_checkpoints(Path(folder))
    except OSError as e:
        logger.warning("cannot list checkpoints in %s: %s", folder, e)
        return []


def quarantined_checkpoints(folder: str | os.PathLike[str]) -> list[Path]:
    """Quarantined checkpoint folders (kept for inspection), by name."""
    root = Path(folder)
    try:
        return sorted(p for p in root.iterdir() if QUARANTINE_TAG in p.name and p.is_dir())
    except FileNotFoundError:
        return []
