"""Distributed checkpoints (DCP) with a commit marker, async save and keep-last-N.

A checkpoint is a folder `step-NNNNNNNN/` written by torch.distributed.checkpoint;
it counts only once rank 0 has written `COMMITTED` into it, after every rank's
shard and the metadata are on disk. A save that was killed half-way therefore
has no marker, is never loaded, and is removed at the next prune. Because DCP
stores tensors by fully qualified name with their global shapes, a checkpoint
written under one layout loads under another (resharding).
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import time
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
import torch.distributed.checkpoint as dcp
from torch.distributed.checkpoint.api import CheckpointException
from torch.distributed.checkpoint.staging import DefaultStager, StagingOptions
from torch.distributed.checkpoint.state_dict import (
    StateDictOptions,
    get_state_dict,
    set_state_dict,
)
from torch.distributed.checkpoint.state_dict_saver import AsyncSaveResponse

logger = logging.getLogger(__name__)

COMMIT_MARKER = "COMMITTED"
STEP_PREFIX = "step-"


@dataclass(frozen=True, slots=True)
class CheckpointInfo:
    step: int
    path: Path
    meta: dict[str, Any]


def step_dir(folder: Path, step: int) -> Path:
    return folder / f"{STEP_PREFIX}{step:08d}"


def committed_checkpoints(folder: str | os.PathLike[str]) -> list[CheckpointInfo]:
    """Committed checkpoints, oldest first. Safe to call from any process."""
    out: list[CheckpointInfo] = []
    root = Path(folder)
    if not root.is_dir():
        return out
    for d in root.iterdir():
        marker = d / COMMIT_MARKER
        if not (d.name.startswith(STEP_PREFIX) and marker.is_file()):
            continue
        try:
            meta = json.loads(marker.read_text())
            out.append(CheckpointInfo(int(meta["step"]), d, meta))
        except (ValueError, KeyError, OSError):
            logger.warning("ignoring checkpoint %s: unreadable commit marker", d)
    return sorted(out, key=lambda c: c.step)


def _write_atomic(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


@dataclass(slots=True)
class SaveTimings:
    """Seconds the training loop was blocked, and total save duration."""

    step: int
    blocked_s: float
    started_at: float
    finished_at: float | None = None


class Checkpointer:
    """Saves and loads the whole training state on every rank.

    NOTE: every method is collective: all ranks must call it in the same order.
    Async saves run on their own gloo process group so background writes never
    interleave with the training loop's collectives.
    """

    def __init__(self, folder: str | os.PathLike[str], *, keep_last: int, async_save: bool,
                 rank: int, on_commit: Callable[[int, Path, SaveTimings], None] | None = None) -> None:
        self.folder = Path(folder)
        self.keep_last = keep_last
        self.async_save = async_save
        self.rank = rank
        self.on_commit = on_commit
        self._pending: tuple[Future[Any], int, SaveTimings, dict[str, Any]] | None = None
        self._staging: Future[Any] | None = None
        self._blocked_s = 0.0
        self._pg = dist.new_group(backend="gloo") if dist.is_initialized() else None
        self._stager: DefaultStager | None = None
        if async_save:
            cuda = torch.cuda.is_available()
            # Staging (the copy of the state to host memory) runs in a background
            # thread while the next forward/backward runs; only the optimizer step
            # has to wait for it (`wait_staging`).
            self._stager = DefaultStager(StagingOptions(use_pinned_memory=cuda, use_shared_memory=False,
                                                        use_async_staging=True, use_non_blocking_copy=cuda))
        if rank == 0:
            self.folder.mkdir(parents=True, exist_ok=True)

    # ---- saving -------------------------------------------------------------
    def save(self, step: int, model: torch.nn.Module, optimizer: torch.optim.Optimizer,
             extra: dict[str, Any], meta: dict[str, Any]) -> SaveTimings:
        """Save state for `step`; returns how long the caller was blocked."""
        t0 = time.perf_counter()
        self.wait()
        path = step_dir(self.folder, step)
        state = self._state(model, optimizer, extra)
        timings = SaveTimings(step=step, blocked_s=0.0, started_at=time.time())
        if self.async_save:
            resp = dcp.async_save(state, checkpoint_id=str(path), process_group=self._pg,
                                  async_stager=self._stager)
            if isinstance(resp, AsyncSaveResponse):
                self._staging, fut = resp.staging_completion, resp.upload_completion
            else:
                fut = resp
            self._pending = (fut, step, timings, meta)
        else:
            dcp.save(state, checkpoint_id=str(path), process_group=self._pg)
            self._commit(step, meta, timings)
        timings.blocked_s = time.perf_counter() - t0
        self._blocked_s += timings.blocked_s
        return timings

    def wait_staging(self) -> None:
        """Block until the last async save has copied the state (call before changing it)."""
        if self._staging is not None:
            t0 = time.perf_counter()
            self._staging.result()
            self._staging = None
            self._blocked_s += time.perf_counter() - t0

    def take_blocked_seconds(self) -> float:
        """Seconds the caller was blocked by saves since the last call."""
        out, self._blocked_s = self._blocked_s, 0.0
        return out

    def close(self) -> None:
        self.wait()
        if self._stager is not None:
            self._stager.close()
            self._stager = None

    def wait(self) -> None:
        """Block until an in-flight async save is written and committed."""
        self.wait_staging()
        if self._pending is None:
            return
        fut, step, timings, meta = self._pending
        self._pending = None
        fut.result()
        self._commit(step, meta, timings)

    def poll(self) -> None:
        """Commit a finished async save without blocking on an unfinished one."""
        if self._pending is not None and self._pending[0].done():
            self.wait()

    def _commit(self, step: int, meta: dict[str, Any], timings: SaveTimings) -> None:
        path = step_dir(self.folder, step)
        timings.finished_at = time.time()
        if self.rank == 0:
            # The coordinator's save returns only after every rank's data and the
            # global metadata are written, so rank 0 alone can commit.
            _write_atomic(path / COMMIT_MARKER, json.dumps({"step": step, "time": time.time(), **meta}))
            self._prune()
        if self.on_commit is not None:
            self.on_commit(step, path, timings)

    def _prune(self) -> None:
        committed = committed_checkpoints(self.folder)
        keep = {c.path for c in committed[-self.keep_last :]}
        newest = committed[-1].step if committed else -1
        for d in self.folder.iterdir():
            if not d.name.startswith(STEP_PREFIX) or d in keep:
                continue
            is_committed = (d / COMMIT_MARKER).exists()
            try:
                step = int(d.name.removeprefix(STEP_PREFIX))
            except ValueError:
                continue
            # An uncommitted folder newer than the newest commit may be a save in flight.
            if is_committed or step < newest:
                shutil.rmtree(d, ignore_errors=True)

    # ---- loading ------------------------------------------------------------
    def load_latest(self, model: torch.nn.Module, optimizer: torch.optim.Optimizer,
                    extra: dict[str, Any]) -> CheckpointInfo | None:
        """Load the newest committed checkpoint that every rank can read.

        Falls back to older committed checkpoints when one fails to load on any
        rank. Returns None (and leaves the state untouched) when there is none.
        """
        candidates = committed_checkpoints(self.folder)
        # Every rank must try the same list; rank 0's view decides.
        steps = [c.step for c in candidates]
        if dist.is_initialized():
            box = [steps]
            dist.broadcast_object_list(box, src=0, group=self._pg)
            steps = box[0]
        for step in reversed(steps):
            path = step_dir(self.folder, step)
            state = self._state(model, optimizer, extra)
            ok = 1
            try:
                dcp.load(state, checkpoint_id=str(path), process_group=self._pg)
            except (Exception, CheckpointException) as e:  # corrupt or unreadable: try an older one
                logger.warning("rank %d: checkpoint %s failed to load: %s", self.rank, path, e)
                ok = 0
            if dist.is_initialized():
                flag = torch.tensor([ok])
                dist.all_reduce(flag, op=dist.ReduceOp.MIN, group=self._pg)
                ok = int(flag.item())
            if ok:
                self._apply(model, optimizer, state)
                extra.update(state["extra"])
                meta = json.loads((path / COMMIT_MARKER).read_text())
                return CheckpointInfo(step, path, meta)
        return None

    @staticmethod
    def _state(model: torch.nn.Module, optimizer: torch.optim.Optimizer,
               extra: dict[str, Any]) -> dict[str, Any]:
        msd, osd = get_state_dict(model, optimizer, options=StateDictOptions(full_state_dict=False))
        return {"model": msd, "optim": osd, "extra": dict(extra)}

    @staticmethod
    def _apply(model: torch.nn.Module, optimizer: torch.optim.Optimizer, state: dict[str, Any]) -> None:
        set_state_dict(model, optimizer, model_state_dict=state["model"],
                       optim_state_dict=state["optim"],
                       options=StateDictOptions(full_state_dict=False))
