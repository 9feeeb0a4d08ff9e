"""Distributed checkpoints (DCP): write aside, verify, commit by rename; checksummed; never lost.

A save writes into a fresh hidden folder `.tmp-step-NNNNNNNN-a<attempt>-<nonce>-<k>/`.
Once every rank's shard and the global metadata are on disk, rank 0 checks that
every file the metadata names is there and long enough, records a sha256 per
file in `COMMITTED`, and renames the folder to `step-NNNNNNNN/`. A save that
fails or is killed half-way therefore never looks committed, and an earlier
commit of the same step is replaced only by a complete one. A failed save
(disk full, I/O error, storage gone) removes its own folder and training goes
on; the next interval tries again.

Loading verifies the checksums before DCP reads the shards. A committed
checkpoint that does not load is quarantined (renamed `step-N.quarantined-<ts>`
with a JSON note beside it, never deleted) and the next older one is tried from
freshly initialised state. When committed checkpoints exist (or were
quarantined) and none loads, `CheckpointLoadError` says so: a rank never starts
over from step 0 in a folder that holds progress.

Because DCP stores tensors by fully qualified name with their global shapes, a
checkpoint written under one layout loads under another (resharding).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import secrets
import shutil
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
import torch.distributed.checkpoint as dcp
from torch.distributed.checkpoint import FileSystemReader
from torch.distributed.checkpoint.api import CheckpointException
from torch.distributed.checkpoint.staging import DefaultStager, StagingOptions
from torch.distributed.checkpoint.state_dict import (
    StateDictOptions,
    get_state_dict,
    set_state_dict,
)
from torch.distributed.checkpoint.state_dict_saver import AsyncSaveResponse
from torch.utils._pytree import tree_map_only

from trainer.checkpoint_files import (
    ASIDE_RE,
    COMMIT_MARKER,
    HASH,
    LOUD_AFTER_FAILED_SAVES,
    QUARANTINE_TAG,
    REPLACED_PREFIX,
    STEP_PREFIX,
    TMP_PREFIX,
    CheckpointInfo,
    committed_checkpoints,
    quarantined_checkpoints,
    scan_checkpoints,
    step_dir,
)

__all__ = ["COMMIT_MARKER", "LOUD_AFTER_FAILED_SAVES", "QUARANTINE_TAG", "STEP_PREFIX", "CheckpointInfo",
           "CheckpointLoadError", "CheckpointSaveError", "Checkpointer", "SaveTimings", "committed_checkpoints",
           "quarantined_checkpoints", "step_dir"]

logger = logging.getLogger(__name__)


def describe_error(e: BaseException) -> str:
    """One line naming the root error with the OS's own wording (e.g. 'No space left on device')."""
    if isinstance(e, CheckpointException):
        for _rank, failure in sorted(e.failures.items()):
            inner = failure[0] if isinstance(failure, tuple) else failure
            if isinstance(inner, BaseException):
                return describe_error(inner)
    cause = e
    while cause.__cause__ is not None and not isinstance(cause, OSError):
        cause = cause.__cause__
    text = str(cause).strip().splitlines()
    msg = text[0] if text else ""
    return f"{type(cause).__name__}: {msg}" if not isinstance(cause, OSError) else msg or type(cause).__name__


class CheckpointLoadError(RuntimeError):
    """Committed checkpoints exist but none loads; the message is one line for the rank's log."""


class CheckpointSaveError(RuntimeError):
    """The final step's checkpoint could not be committed; the message is one line for the rank's log."""


def file_checksums(folder: Path) -> dict[str, dict[str, Any]]:
    """sha256 and size of every file DCP wrote into `folder`."""
    out: dict[str, dict[str, Any]] = {}
    for p in sorted(folder.iterdir()):
        if p.is_file() and p.name != COMMIT_MARKER:
            out[p.name] = {HASH: _digest(p), "size": p.stat().st_size}
    return out


def _digest(path: Path) -> str:
    with open(path, "rb") as f:
        return hashlib.file_digest(f, HASH).hexdigest()


def verify_complete(folder: Path) -> None:
    """Every file the DCP metadata names exists and holds the bytes it points at; raises otherwise."""
    md = FileSystemReader(str(folder)).read_metadata()
    need: dict[str, int] = {}
    for info in (md.storage_data or {}).values():
        need[info.relative_path] = max(need.get(info.relative_path, 0), info.offset + info.length)
    for name, size in need.items():
        have = (folder / name).stat().st_size
        if have < size:
            raise OSError(f"incomplete checkpoint: {folder.name}/{name} has {have} bytes, metadata needs {size}")


def verify_checksums(folder: Path, files: dict[str, dict[str, Any]], names: list[str]) -> None:
    """Raise when one of `names` differs from the size or sha256 recorded at commit."""
    for name in names:
        want = files[name]
        p = folder / name
        size = p.stat().st_size
        if size != want["size"]:
            raise OSError(f"checksum mismatch in {folder.name}/{name}: {size} bytes, recorded {want['size']}")
        got = _digest(p)
        if got != want[HASH]:
            raise OSError(f"checksum mismatch in {folder.name}/{name}: {HASH} {got[:16]}, "
                          f"recorded {want[HASH][:16]}")


def _write_atomic(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _rmtree_logged(path: Path) -> None:
    try:
        shutil.rmtree(path)
    except FileNotFoundError:
        pass
    except OSError as e:
        logger.error("cannot remove %s: %s", path, describe_error(e))


@dataclass(slots=True)
class SaveTimings:
    """Seconds the training loop was blocked, and total save duration."""

    step: int
    blocked_s: float
    started_at: float
    finished_at: float | None = None


SaveFailure = Callable[[int, str, int, int], None]
"""on_failure(step, error line, failures so far, consecutive failures)."""


_STATE_OPTIONS = StateDictOptions(full_state_dict=False, flatten_optimizer_state_dict=True)
"""Sharded state, and the optimizer's keyed by parameter name: with pipeline stages every rank holds other
parameters, and only the flattened form loads back (unflattened, a pipelined job's resume failed with
KeyError: 'betas'). It also reshards across layouts."""


class Checkpointer:
    """Saves and loads the whole training state on every rank.

    NOTE: every method is collective: all ranks must call it in the same order.
    Saves, their commit and the agreement on their outcome run on their own gloo
    process group, so background writes never interleave with the training
    loop's collectives.
    """

    def __init__(self, folder: str | os.PathLike[str], *, keep_last: int, async_save: bool,
                 rank: int, attempt: int = 1, on_commit: Callable[[int, Path, SaveTimings], None] | None = None,
                 on_failure: SaveFailure | None = None) -> None:
        self.folder = Path(folder)
        self.keep_last = keep_last
        self.async_save = async_save
        self.rank = rank
        self.attempt = attempt
        self.on_commit = on_commit
        self.on_failure = on_failure
        self.failures = 0
        self.consecutive_failures = 0
        self.last_error: str | None = None
        self.last_saved: tuple[int, bool] | None = None
        """(step, committed) of the newest save that has settled."""
        self._pending: Future[bool] | None = None
        self._staging: Future[Any] | None = None
        self._blocked_s = 0.0
        self._saves = 0
        self._pg = dist.new_group(backend="gloo") if dist.is_initialized() else None
        box = [secrets.token_hex(4)]
        if self._pg is not None:
            dist.broadcast_object_list(box, src=0, group=self._pg)
        self._nonce = box[0]
        """Shared by all ranks so that they write the same temporary folder."""
        self._stager: DefaultStager | None = None
        self._executor: ThreadPoolExecutor | None = None
        if async_save:
            cuda = torch.cuda.is_available()
            # Staging (the copy of the state to host memory) runs in a background
            # thread while the next forward/backward runs; only the optimizer step
            # has to wait for it (`wait_staging`).
            self._stager = DefaultStager(StagingOptions(use_pinned_memory=cuda, use_shared_memory=False,
                                                        use_async_staging=True, use_non_blocking_copy=cuda))
            self._executor = ThreadPoolExecutor(1, thread_name_prefix="checkpoint-commit")
        if rank == 0:
            try:
                self.folder.mkdir(parents=True, exist_ok=True)
            except OSError as e:  # reported by the load or the save that needs it
                logger.error("cannot create checkpoint folder %s: %s", self.folder, describe_error(e))

    # ---- saving -------------------------------------------------------------
    def save(self, step: int, model: torch.nn.Module, optimizer: torch.optim.Optimizer,
             extra: dict[str, Any], meta: dict[str, Any]) -> SaveTimings:
        """Save state for `step`; returns how long the caller was blocked. A failed save is reported, not raised."""
        t0 = time.perf_counter()
        self.wait()
        self._saves += 1
        name = step_dir(self.folder, step).name
        tmp = self.folder / f"{TMP_PREFIX}{name}-a{self.attempt}-{self._nonce}-{self._saves}"
        state = self._state(model, optimizer, extra)
        timings = SaveTimings(step=step, blocked_s=0.0, started_at=time.time())
        if self.async_save:
            assert self._executor is not None
            resp = dcp.async_save(state, checkpoint_id=str(tmp), process_group=self._pg,
                                  async_stager=self._stager)
            if isinstance(resp, AsyncSaveResponse):
                self._staging, upload = resp.staging_completion, resp.upload_completion
            else:
                upload = resp
            self._pending = self._executor.submit(self._finish, upload, step, tmp, meta, timings)
        else:
            err: BaseException | None = None
            try:
                dcp.save(state, checkpoint_id=str(tmp), process_group=self._pg)
            except (Exception, CheckpointException) as e:  # disk full, I/O error, storage gone: settled below
                err = e
            self._settle(step, tmp, meta, timings, err)
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
        if self._executor is not None:
            self._executor.shutdown(wait=True)
            self._executor = None

    def wait(self) -> None:
        """Block until an in-flight async save is written and committed (or has failed)."""
        self.wait_staging()
        if self._pending is None:
            return
        fut, self._pending = self._pending, None
        fut.result()

    def poll(self) -> None:
        """Settle a finished async save without blocking on an unfinished one."""
        if self._pending is not None and self._pending.done():
            self.wait()

    def _finish(self, upload: Future[Any], step: int, tmp: Path, meta: dict[str, Any],
                timings: SaveTimings) -> bool:
        err: BaseException | None = None
        try:
            upload.result()
        except (Exception, CheckpointException) as e:
            err = e
        return self._settle(step, tmp, meta, timings, err)

    def _settle(self, step: int, tmp: Path, meta: dict[str, Any], timings: SaveTimings,
                err: BaseException | None) -> bool:
        """Commit (rank 0) when every rank wrote its shard; all ranks agree on the outcome."""
        final = step_dir(self.folder, step)
        if err is None and self.rank == 0:
            try:
                self._commit(step, tmp, final, meta)
            except (Exception, CheckpointException) as e:
                err = e
        ok = self._agree(err is None)
        timings.finished_at = time.time()
        if ok:
            self.consecutive_failures = 0
            self.last_saved = (step, True)
            if self.rank == 0:
                self._prune(keep=tmp)
            if self.on_commit is not None:
                self.on_commit(step, final, timings)
            return True
        reason = self._first_error(describe_error(err) if err is not None else "")
        if self.rank == 0:
            _rmtree_logged(tmp)  # the partial save; never a committed folder
        self.failures += 1
        self.consecutive_failures += 1
        self.last_error = reason
        self.last_saved = (step, False)
        if self.consecutive_failures >= LOUD_AFTER_FAILED_SAVES:
            logger.error("rank %d: NO CHECKPOINT COMMITTED for %d consecutive save intervals (failed at step %d): "
                         "%s", self.rank, self.consecutive_failures, step, reason)
        else:
            logger.warning("rank %d: checkpoint save of step %d failed, training goes on and the next "
                           "interval tries again: %s", self.rank, step, reason)
        if self.on_failure is not None:
            self.on_failure(step, reason, self.failures, self.consecutive_failures)
        return False

    def _commit(self, step: int, tmp: Path, final: Path, meta: dict[str, Any]) -> None:
        """Verify the written folder, record checksums, write the marker, rename it into place."""
        verify_complete(tmp)
        files = file_checksums(tmp)
        _write_atomic(tmp / COMMIT_MARKER, json.dumps({"step": step, "time": time.time(), **meta,
                                                       "files": files}))
        _fsync_dir(tmp)
        aside = None
        if final.exists():
            # An earlier commit (or a legacy torn folder) of this step: swap it out only now that
            # the replacement is complete. A crash between the two renames is repaired at load.
            aside = self.folder / f"{REPLACED_PREFIX}{final.name}-{self._nonce}-{self._saves}"
            os.rename(final, aside)
        os.rename(tmp, final)
        _fsync_dir(self.folder)
        if aside is not None:
            _rmtree_logged(aside)

    def _prune(self, keep: Path | None = None) -> None:
        """Remove committed steps beyond keep_last and this job's abandoned temporary folders."""
        try:
            committed = scan_checkpoints(self.folder)
            leftovers = [p for p in self.folder.iterdir()
                         if p.name.startswith((TMP_PREFIX, REPLACED_PREFIX)) and p != keep]
        except OSError as e:
            logger.error("cannot prune checkpoints in %s: %s", self.folder, describe_error(e))
            return
        for c in committed[: -self.keep_last]:
            _rmtree_logged(c.path)
        for p in leftovers:
            _rmtree_logged(p)

    # ---- agreement across ranks -----------------------------------------------
    def _agree(self, ok: bool) -> bool:
        if self._pg is None:
            return ok
        flag = torch.tensor([1 if ok else 0])
        dist.all_reduce(flag, op=dist.ReduceOp.MIN, group=self._pg)
        return bool(flag.item())

    def _first_error(self, mine: str) -> str:
        if self._pg is None:
            return mine or "unknown error"
        msgs: list[str] = [""] * dist.get_world_size(self._pg)
        dist.all_gather_object(msgs, mine, group=self._pg)
        return next((f"rank {r}: {m}" for r, m in enumerate(msgs) if m), "unknown error")

    def _world(self) -> int:
        return dist.get_world_size(self._pg) if self._pg is not None else 1

    # ---- loading ------------------------------------------------------------
    def load_latest(self, model: torch.nn.Module, optimizer: torch.optim.Optimizer,
                    extra: dict[str, Any]) -> CheckpointInfo | None:
        """Load the newest committed checkpoint that every rank can read.

        Returns None only when the folder holds no committed and no quarantined
        checkpoint (a fresh start). A checkpoint that fails to load on any rank
        is quarantined by rank 0 and the next older one is tried from the state
        as it was before the first try. Raises CheckpointLoadError when none loads.
        """
        listing: dict[str, Any] = {"steps": [], "quarantined": [], "error": None}
        if self.rank == 0:
            try:
                self._recover()
                listing["steps"] = [c.step for c in scan_checkpoints(self.folder)]
                listing["quarantined"] = [p.name for p in quarantined_checkpoints(self.folder)]
            except OSError as e:
                listing["error"] = describe_error(e)
        if self._pg is not None:  # every rank must try the same list; rank 0's view decides
            box = [listing]
            dist.broadcast_object_list(box, src=0, group=self._pg)
            listing = box[0]
        if listing["error"]:
            raise CheckpointLoadError(f"checkpoint load failed: cannot read checkpoint folder {self.folder}: "
                                      f"{listing['error']}; not starting over from step 0")
        steps: list[int] = listing["steps"]
        if not steps:
            if listing["quarantined"]:
                raise CheckpointLoadError(
                    f"checkpoint load failed: {self.folder} holds no loadable committed checkpoint, only "
                    f"quarantined ones ({', '.join(listing['quarantined'])}); not starting over from step 0 "
                    "(rename one back to step-NNNNNNNN to retry it, or submit with --fresh)")
            return None
        snapshot: dict[str, Any] | None = None
        tried: list[str] = []
        for step in reversed(steps):
            path = step_dir(self.folder, step)
            if snapshot is None:
                snapshot = tree_map_only(torch.Tensor, lambda t: t.detach().clone(),
                                         self._state(model, optimizer, extra))
            else:  # dcp.load writes in place: start each try from the state before the first one
                self._apply(model, optimizer, tree_map_only(torch.Tensor, lambda t: t.detach().clone(), snapshot))
            state = self._state(model, optimizer, extra)
            err: BaseException | None = None
            meta: dict[str, Any] = {}
            try:
                meta = self._verify_for_load(path)
            except (Exception, CheckpointException) as e:
                err = e
            ok = self._agree(err is None)
            if ok:
                try:
                    dcp.load(state, checkpoint_id=str(path), process_group=self._pg)
                except (Exception, CheckpointException) as e:
                    err = e
                ok = self._agree(err is None)
            if ok:
                self._apply(model, optimizer, state)
                extra.update(state["extra"])
                return CheckpointInfo(step, path, meta)
            reason = self._first_error(describe_error(err) if err is not None else "")
            tried.append(f"{path.name} ({reason})")
            logger.warning("rank %d: checkpoint %s does not load, quarantining it and trying an older one: %s",
                           self.rank, path, reason)
            if self.rank == 0:
                self._quarantine(path, reason)
        raise CheckpointLoadError(
            f"checkpoint load failed: no committed checkpoint in {self.folder} loads, tried {'; '.join(tried)}; "
            f"quarantined them as *{QUARANTINE_TAG}*, not starting over from step 0")

    def _verify_for_load(self, path: Path) -> dict[str, Any]:
        """Read the marker and check this rank's share of the recorded checksums."""
        meta: dict[str, Any] = json.loads((path / COMMIT_MARKER).read_text())
        files = meta.get("files")
        if files is None:
            logger.info("checkpoint %s predates checksums; loading it unverified", path)
            return meta
        names = sorted(files)
        verify_checksums(path, files, names[self.rank :: self._world()])
        return meta

    def _quarantine(self, path: Path, reason: str) -> None:
        stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
        dest = path.with_name(f"{path.name}{QUARANTINE_TAG}{stamp}")
        n = 1
        while dest.exists():
            n += 1
            dest = path.with_name(f"{path.name}{QUARANTINE_TAG}{stamp}-{n}")
        try:
            os.rename(path, dest)
            _write_atomic(dest.with_name(dest.name + ".json"), json.dumps(
                {"checkpoint": path.name, "quarantined_as": dest.name, "reason": reason,
                 "attempt": self.attempt, "time": time.time()}, indent=1))
            logger.warning("quarantined checkpoint %s as %s: %s", path, dest.name, reason)
        except OSError as e:
            logger.error("cannot quarantine checkpoint %s: %s", path, describe_error(e))

    def _recover(self) -> None:
        """Finish commits interrupted between their renames; drop abandoned temporary folders (rank 0)."""
        if not self.folder.is_dir():
            return
        aside = sorted((p for p in self.folder.iterdir() if ASIDE_RE.match(p.name)),
                       key=lambda p: not p.name.startswith(TMP_PREFIX))  # a newer complete save first
        for p in aside:
            m = ASIDE_RE.match(p.name)
            assert m is not None
            final = step_dir(self.folder, int(m.group(2)))
            if (p / COMMIT_MARKER).is_file() and not final.exists():
                logger.warning("restoring checkpoint %s from %s (its commit was interrupted)", final, p.name)
                os.rename(p, final)
            else:
                _rmtree_logged(p)

    @staticmethod
    def _state(model: torch.nn.Module, optimizer: torch.optim.Optimizer,
               extra: dict[str, Any]) -> dict[str, Any]:
        msd, osd = get_state_dict(model, optimizer, options=_STATE_OPTIONS)
        return {"model": msd, "optim": osd, "extra": dict(extra)}

    @staticmethod
    def _apply(model: torch.nn.Module, optimizer: torch.optim.Optimizer, state: dict[str, Any]) -> None:
        set_state_dict(model, optimizer, model_state_dict=state["model"],
                       optim_state_dict=state["optim"],
                       options=_STATE_OPTIONS)
