"""In-memory snapshots: every few steps each rank keeps its own shard of the training state in
node-local shared memory, so that a restart under the same layout loses a few steps, not the
steps since the last DCP checkpoint.

A snapshot holds the rank's local tensors only (a DTensor's local shard), so it loads only
under the same world size, parallel layout and model: its marker records a key of those. It
never replaces a DCP checkpoint: it is gone with the host (or with a reboot), and it cannot be
resharded. On resume every rank lists what it has, the ranks agree on the newest step all of
them hold that is newer than the newest committed checkpoint, load it and check it (size,
sha256, key set and shapes); if any rank fails, every rank falls back to the checkpoint.

A save blocks the training loop only for a copy of the rank's tensors into buffers kept from
one snapshot to the next (on a GPU, the copy off the device); serialising, the checksum and
the write to shared memory run on a background thread while the next steps train, one
snapshot in flight at a time (the next save waits for it). A rank that dies with a write in
flight leaves the snapshot before it as its newest: the marker is written last.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import logging
import os
import shutil
import time
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from torch.distributed.tensor import DTensor
from torch.utils._pytree import tree_flatten, tree_map_only, tree_unflatten

from trainer import snapshot_files as sf
from trainer.checkpoint import Checkpointer
from trainer.checkpoint_files import committed_checkpoints

logger = logging.getLogger(__name__)


def _local(t: Any) -> Any:
    return t.to_local() if isinstance(t, DTensor) else t


def local_state(model: torch.nn.Module, optimizer: torch.optim.Optimizer, extra: dict[str, Any]) -> dict[str, Any]:
    """The rank's shard of the model and optimizer state (plain tensors), the data position and RNG states."""
    state = Checkpointer._state(model, optimizer, extra)
    rng: dict[str, Any] = {"cpu": torch.get_rng_state()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        rng["cuda"] = torch.cuda.get_rng_state()
    return {"model": {k: _local(v) for k, v in state["model"].items()},
            "optim": {k: _local(v) for k, v in state["optim"].items()},
            "extra": dict(extra), "rng": rng}


def _copy_into(dst: dict[str, Any], src: dict[str, Any], what: str) -> None:
    """Copy `src`'s values into `dst`'s tensors in place (a DTensor's local shard); raises on any mismatch."""
    if set(dst) != set(src):
        missing, unexpected = sorted(set(dst) - set(src)), sorted(set(src) - set(dst))
        raise ValueError(f"{what} keys differ: missing {missing[:3]}, unexpected {unexpected[:3]}")
    with torch.no_grad():
        for k, v in dst.items():
            s = src[k]
            if isinstance(v, torch.Tensor):
                local = _local(v)
                if not isinstance(s, torch.Tensor) or tuple(s.shape) != tuple(local.shape):
                    got = tuple(s.shape) if isinstance(s, torch.Tensor) else type(s).__name__
                    raise ValueError(f"{what} {k}: shape {got}, this rank holds {tuple(local.shape)}")
                local.copy_(s)
            else:
                dst[k] = s


@dataclass(frozen=True, slots=True)
class Resumed:
    step: int
    path: Path


class Snapshotter:
    """One rank's snapshots under `root` (collective methods: every rank calls them in the same order)."""

    def __init__(self, root: str | os.PathLike[str], rank: int, layout: str, *, keep: int = sf.KEEP,
                 group: Any = None, background: bool = True) -> None:
        self.folder = sf.rank_dir(root, rank)
        self.root = Path(root)
        self.rank, self.layout, self.keep, self.group = rank, layout, keep, group
        self.failures = 0
        self.last_step: int | None = None
        """The newest step this rank's snapshot was written for (None before the first)."""
        self._buffers: tuple[Any, list[Any]] | None = None
        """(tree spec, leaves) of the last staged state: its tensors are reused by the next save."""
        self._writer = ThreadPoolExecutor(1, thread_name_prefix="snapshot-writer") if background else None
        self._pending: Future[None] | None = None
        self.count = 0
        self.blocked_s = 0.0
        """Seconds the training loop waited on snapshots (the previous write and the copy), over `count` saves."""
        self.write_s = 0.0
        """Seconds the writes took (serialising, checksum, shared memory), on the writer."""

    def save(self, step: int, model: torch.nn.Module, optimizer: torch.optim.Optimizer,
             extra: dict[str, Any]) -> float:
        """Snapshot `step`; returns the seconds the caller was blocked (the previous write, if still running,
        and the copy). A failure is logged, not raised: snapshots are an optimisation, the DCP checkpoints
        still hold the job's progress."""
        t0 = time.perf_counter()
        self.wait()
        try:
            state = self._stage(local_state(model, optimizer, extra))
        except RuntimeError as e:
            self.failures += 1
            logger.warning("rank %d: snapshot of step %d failed (training goes on): %s", self.rank, step, e)
            return time.perf_counter() - t0
        if self._writer is not None:
            self._pending = self._writer.submit(self._write, step, state)
        else:
            self._write(step, state)
        blocked = time.perf_counter() - t0
        self.count += 1
        self.blocked_s += blocked
        return blocked

    def stats(self) -> dict[str, float]:
        """What the snapshots of this process cost so far (for the policy that picks their interval)."""
        return {"count": self.count, "blocked_s": self.blocked_s, "write_s": self.write_s}

    def _stage(self, state: dict[str, Any]) -> dict[str, Any]:
        """`state` with every tensor copied into this rank's snapshot buffers (allocated at the first save,
        and again when the state's structure, shapes or dtypes change)."""
        leaves, spec = tree_flatten(state)
        kept = self._buffers
        same = kept is not None and kept[0] == spec and all(
            not isinstance(a, torch.Tensor) or (isinstance(b, torch.Tensor) and a.shape == b.shape
                                                and a.dtype == b.dtype)
            for a, b in zip(leaves, kept[1], strict=True))
        out: list[Any] = []
        with torch.no_grad():
            for i, leaf in enumerate(leaves):
                if not isinstance(leaf, torch.Tensor):
                    out.append(leaf)
                elif same:
                    assert kept is not None
                    out.append(kept[1][i].copy_(leaf))
                else:
                    out.append(leaf.detach().to("cpu", copy=True))
        self._buffers = (spec, out)
        return tree_unflatten(out, spec)

    def _write(self, step: int, state: dict[str, Any]) -> None:
        t0 = time.perf_counter()
        try:
            buf = io.BytesIO()
            torch.save(state, buf)
            data = buf.getbuffer()
            meta = sf.SnapshotMeta(step, self.rank, self.layout, len(data), hashlib.sha256(data).hexdigest(),
                                   time.time())
            sf.commit(self.folder, meta, data)
            sf.prune(self.folder, self.keep)
            self.last_step = step
        except (OSError, RuntimeError) as e:
            self.failures += 1
            logger.warning("rank %d: snapshot of step %d failed (training goes on): %s", self.rank, step, e)
        self.write_s += time.perf_counter() - t0

    def wait(self) -> None:
        """Block until the snapshot being written, if any, is on disk (or has failed)."""
        fut, self._pending = self._pending, None
        if fut is not None:
            fut.result()

    def close(self) -> None:
        """Finish the write in flight and stop the writer thread."""
        self.wait()
        if self._writer is not None:
            self._writer.shutdown(wait=True)
            self._writer = None

    def resume(self, model: torch.nn.Module, optimizer: torch.optim.Optimizer, extra: dict[str, Any],
               checkpoint_dir: Path) -> Resumed | None:
        """Load the newest snapshot every rank holds if it is newer than the newest committed checkpoint.

        None: resume from the checkpoint instead (no common snapshot, an older one, or one that failed
        to load on some rank, which is then said in a warning)."""
        self.wait()
        have = {s.step: s.layout for s in sf.list_snapshots(self.folder)}
        box: list[Any] = [max((c.step for c in committed_checkpoints(checkpoint_dir)), default=0)]
        everyone: list[Any] = [have]
        if self._world() > 1:
            dist.broadcast_object_list(box, src=0, group=self.group)  # rank 0's view decides, as for DCP
            everyone = [None] * self._world()
            dist.all_gather_object(everyone, have, group=self.group)
        committed = int(box[0])
        step = sf.choose_step(everyone, self.layout, committed)
        if step is None:
            if have:
                logger.info("rank %d: no snapshot every rank holds under this layout is newer than checkpoint "
                            "step %d (this rank holds steps %s)", self.rank, committed, sorted(have))
            return None
        err: str | None = None
        before = extra.copy()
        kept = tree_map_only(torch.Tensor, lambda t: t.detach().clone(), Checkpointer._state(model, optimizer, extra))
        try:
            self._load(step, model, optimizer, extra)
        except (OSError, ValueError, RuntimeError, KeyError, EOFError) as e:
            err = f"{type(e).__name__}: {e}"
        errors: list[Any] = [err]
        if self._world() > 1:
            errors = [None] * self._world()
            dist.all_gather_object(errors, err, group=self.group)
        bad = [(r, e) for r, e in enumerate(errors) if e]
        if bad:  # every rank goes back to the state before the try, then to the checkpoint
            Checkpointer._apply(model, optimizer, kept)
            extra.clear()
            extra.update(before)
            if err is not None:
                sf.remove(self.folder, step)
            logger.warning("rank %d: snapshot of step %d does not load on rank %d (%s); resuming from the newest "
                           "committed checkpoint (step %d) instead", self.rank, step, bad[0][0], bad[0][1],
                           committed)
            return None
        return Resumed(step, sf.data_path(self.folder, step))

    def _load(self, step: int, model: torch.nn.Module, optimizer: torch.optim.Optimizer,
              extra: dict[str, Any]) -> None:
        meta = next(s for s in sf.list_snapshots(self.folder) if s.step == step)
        payload = torch.load(io.BytesIO(sf.read_verified(self.folder, meta)), weights_only=True)
        if int(payload["extra"]["step"]) != step:
            raise ValueError(f"snapshot step-{step:08d} holds step {payload['extra']['step']}")
        state = Checkpointer._state(model, optimizer, extra)
        _copy_into(state["model"], payload["model"], "model")
        _copy_into(state["optim"], payload["optim"], "optimizer")
        Checkpointer._apply(model, optimizer, state)
        extra.update(payload["extra"])
        torch.set_rng_state(payload["rng"]["cpu"])
        if "cuda" in payload["rng"] and torch.cuda.is_available():
            torch.cuda.set_rng_state(payload["rng"]["cuda"])

    def drop_after(self, step: int) -> None:
        """Forget snapshots newer than `step` (training goes on from it: they belong to another history)."""
        self.wait()
        sf.prune(self.folder, self.keep, above=step)

    def clear(self) -> None:
        """The job is done: give the memory back."""
        self.close()
        self._buffers = None
        shutil.rmtree(self.folder, ignore_errors=True)
        shutil.rmtree(self.root / sf.HELD, ignore_errors=True)  # copies of other hosts' ranks, done too
        with contextlib.suppress(OSError):
            self.root.rmdir()  # once the last rank's folder on this host is gone
            if self.root.name.startswith("host-"):
                self.root.parent.rmdir()  # the job's folder, once no host's part is left in it

    def _world(self) -> int:
        return dist.get_world_size(self.group) if dist.is_initialized() else 1
