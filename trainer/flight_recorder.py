"""torch's flight recorder, read for the backend in use and turned into the progress the hang attribution consumes.

torch keeps one flight recorder per backend: gloo's (`_dump_fr_trace_json`)
and NCCL's (`_dump_nccl_trace_json`, or the pickle `_dump_nccl_trace`, which
is also what NCCL's watchdog writes per rank on a timeout, to the file
`TORCH_FR_DUMP_TEMP_FILE` + rank). Both dumps share one format (torch's
`FlightRecorder<EventType>::dump_json` / `dump_dict`): `pg_status` holds, per
process group id, the last enqueued / started / completed collective sequence
number, and `entries` the ring buffer of recent operations, each with its
group (`process_group`: name, description), `collective_seq_id`,
`p2p_seq_id`, `profiling_name` ("nccl:all_reduce", "nccl:send 0->1",
"nccl:recv 1<-0", "nccl:coalesced") and `state` (scheduled, started,
completed).

Gloo records no events, so its entries stay "scheduled" and only `pg_status`
says what completed; NCCL queries its CUDA events at dump time, so its
entries' states are exact, and it records point-to-point operations too, which
gloo does not. On NCCL the CPU does not block in a collective or a receive
(the GPU stream does), so the recorder is the only place that says what a
rank waits in.

The parsing is pure (no torch); only `read_dump` touches torch.
"""

from __future__ import annotations

import ast
import io
import json
import os
import pickle
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

BUFFER_ENV = ("TORCH_FR_BUFFER_SIZE", "TORCH_NCCL_TRACE_BUFFER_SIZE")
"""The ring buffer's size, first one set wins (torch's `FlightRecorder()` constructor; the second is deprecated)."""
DEFAULT_BUFFER_SIZE = 2000
"""torch's default when neither is set: the recorder is on."""
DUMP_FILE_ENV = ("TORCH_FR_DUMP_TEMP_FILE", "TORCH_NCCL_DEBUG_INFO_TEMP_FILE")
"""Prefix of the per-rank file NCCL's watchdog writes on a timeout (`DebugInfoWriter::getWriter`); rank appended."""

OK, OFF, EMPTY, UNREADABLE = "ok", "off", "empty", "unreadable"


def buffer_size(env: dict[str, str] | None = None) -> int:
    """The flight recorder's buffer size as torch reads it from the environment (0: the recorder is off)."""
    env = dict(os.environ) if env is None else env
    for name in BUFFER_ENV:
        if env.get(name, "") != "":
            try:
                return int(env[name])
            except ValueError:
                return DEFAULT_BUFFER_SIZE
    return DEFAULT_BUFFER_SIZE


def dump_file_prefix(env: dict[str, str] | None = None) -> str:
    """Where NCCL's watchdog writes this process's dump, less the rank (torch's default when unset)."""
    env = dict(os.environ) if env is None else env
    for name in DUMP_FILE_ENV:
        if env.get(name):
            return env[name]
    cache = env.get("XDG_CACHE_HOME") or f"{env.get('HOME', '/tmp')}/.cache"
    return f"{cache}/torch/comm_lib_trace_rank_"


def backend_of_dump(dump: dict[str, Any]) -> str:
    """'nccl', 'gloo', ... from the entries' profiling names ('' when there are none)."""
    for e in dump.get("entries") or ():
        name = str(e.get("profiling_name") or "")
        if ":" in name:
            return name.split(":", 1)[0]
    return ""


@dataclass(slots=True)
class RecorderProgress:
    """One rank's progress from its flight recorder, in the shape the beacon carries and the attribution reads."""

    collectives: dict[str, dict[str, Any]] = field(default_factory=dict)
    """Process group name -> {"enqueued", "completed", "op", "desc"}."""
    p2p: list[dict[str, Any]] | None = None
    """Point-to-point channels {"chan", "role", "peer", "posted", "done"} (NCCL only; None where not recorded)."""
    recorder: dict[str, Any] = field(default_factory=dict)
    """{"backend", "state" (ok | off | empty | unreadable), "entries", "detail"}."""


def _int(v: Any, default: int = -1) -> int:
    try:
        return int(v)
    except (TypeError, ValueError):
        return default


def _completed(e: dict[str, Any]) -> bool:
    return e.get("state") == "completed" or bool(e.get("time_discovered_completed_ns"))


def _group_ranks(dump: dict[str, Any], name: str, fallback: dict[str, list[int]] | None) -> list[int] | None:
    cfg = (dump.get("pg_config") or {}).get(name) or {}
    ranks = cfg.get("ranks")
    if isinstance(ranks, str) and ranks.strip():
        try:
            ranks = ast.literal_eval(ranks)
        except (ValueError, SyntaxError):
            ranks = None
    if isinstance(ranks, (list, tuple)) and ranks:
        return sorted(int(r) for r in ranks)
    if fallback and name in fallback:
        return sorted(int(r) for r in fallback[name])
    return None


def _p2p_channels(dump: dict[str, Any], entries: list[dict[str, Any]], rank: int | None,
                  group_ranks: dict[str, list[int]] | None) -> list[dict[str, Any]]:
    """Point-to-point operations not yet completed, per channel (group, global sender > global receiver).

    A coalesced batch (`batch_isend_irecv`) records one entry per operation,
    without events, then a "nccl:coalesced" entry with the same p2p_seq_id
    that carries the batch's state (torch's fr_trace `find_coalesced_group`).
    Completed operations are matched pairs, so only pending ones say who
    waits: `posted` counts the pending operations (for a receive `done` is 0),
    which is comparable across ranks whatever has left the ring buffers.
    """
    batch_done: dict[tuple[str, int], bool] = {}
    for e in entries:
        if e.get("is_p2p") and str(e.get("profiling_name", "")).endswith(":coalesced"):
            batch_done[(str(e["process_group"][0]), _int(e.get("p2p_seq_id")))] = _completed(e)
    chans: dict[str, dict[str, Any]] = {}
    for e in entries:
        if not e.get("is_p2p"):
            continue
        kind, _, meta = str(e.get("profiling_name", "")).partition(":")[2].partition(" ")
        if kind not in ("send", "recv"):
            continue
        group = str(e["process_group"][0])
        done = batch_done.get((group, _int(e.get("p2p_seq_id"))), _completed(e))
        try:
            a, b = (int(x) for x in meta.split("->" if kind == "send" else "<-"))
        except ValueError:
            continue
        ranks = _group_ranks(dump, group, group_ranks)
        if ranks is None or max(a, b) >= len(ranks):
            continue
        me, peer = ranks[a], ranks[b]
        if rank is not None and me != rank:
            continue
        src, dst = (me, peer) if kind == "send" else (peer, me)
        chan = f"{group} {src}>{dst}"
        c = chans.setdefault(chan, {"chan": chan, "role": kind, "peer": peer, "posted": 0, "done": 0})
        if not done:
            c["posted"] += 1
            if kind == "send":
                c["done"] = c["posted"]
    return list(chans.values())


def parse_flight_record(dump: dict[str, Any], names: dict[str, tuple[str, str]] | None = None, *,
                        rank: int | None = None, group_ranks: dict[str, list[int]] | None = None
                        ) -> RecorderProgress:
    """Per-group collective progress (and, on NCCL, pending point-to-point operations) from one rank's dump.

    Per group: `enqueued` is the collective the rank waits in when it waits
    (`completed` below it), else its last one. On gloo both come from
    `pg_status`; on NCCL from the entries' states, `enqueued` being the first
    collective not completed (the host enqueues ahead of the GPU).

    Accepts the JSON dump (`pg_status` values as strings, absent states 0) and
    the pickle (integers, None). `names` caches the pg id -> (name, desc)
    mapping between dumps of one process, so a group whose entries have left
    the ring buffer keeps its name; `group_ranks` (name -> global ranks) maps a
    point-to-point peer to its global rank where the dump's `pg_config` lacks
    the group.
    """
    names = {} if names is None else names
    entries = list(dump.get("entries") or [])
    for e in entries:
        pg = e.get("process_group") or ["?", ""]
        names[str(e.get("pg_id"))] = (str(pg[0]), str(pg[1]) if len(pg) > 1 else "")
    backend = backend_of_dump(dump)
    exact = backend not in ("", "gloo")  # gloo's entries never leave "scheduled"
    out: dict[str, dict[str, Any]] = {}
    for pg_id, st in (dump.get("pg_status") or {}).items():
        name, desc = names.get(str(pg_id), (f"id:{pg_id}", ""))
        out[name] = {"enqueued": _int(st.get("last_enqueued_collective")),
                     "completed": _int(st.get("last_completed_collective")), "op": None, "desc": desc}
    by_group: dict[str, list[dict[str, Any]]] = {}
    for e in entries:
        if not e.get("is_p2p"):
            by_group.setdefault(names[str(e.get("pg_id"))][0], []).append(e)
    for name, es in by_group.items():
        desc = names[str(es[0].get("pg_id"))][1]
        g = out.setdefault(name, {"enqueued": -1, "completed": -1, "op": None, "desc": desc})
        if exact:
            # The host runs ahead of the GPU: the collective a rank waits in is its first one not completed
            # (later ones queue behind it on the stream), and pg_status may lag the watchdog.
            pending = sorted(_int(e.get("collective_seq_id")) for e in es if not _completed(e))
            last = max(g["enqueued"], max(_int(e.get("collective_seq_id")) for e in es))
            g["enqueued"] = pending[0] if pending else last
            g["completed"] = g["enqueued"] - 1 if pending else last
        ops = [e for e in es if _int(e.get("collective_seq_id")) == g["enqueued"]]
        named = [e for e in ops if not str(e.get("profiling_name", "")).endswith(":coalesced")] or ops
        if named:
            g["op"] = named[-1].get("profiling_name")
    p2p = _p2p_channels(dump, entries, rank, group_ranks) if exact else None
    state = OK if out or entries else EMPTY
    return RecorderProgress(out, p2p, {"backend": backend, "state": state, "entries": len(entries)})


class _NoGlobals(pickle.Unpickler):
    """torch's dump pickles hold only dicts, lists, tuples, strings and numbers: refuse anything else."""

    def find_class(self, module: str, name: str) -> Any:
        raise pickle.UnpicklingError(f"flight-recorder dump refers to {module}.{name}")


def loads_dump(data: bytes | str) -> dict[str, Any]:
    """A dump as torch returns or writes it: JSON text or its pickle."""
    if isinstance(data, str):
        return json.loads(data)
    if data[:1] in (b"{", b" ", b"\n"):
        return json.loads(data)
    return _NoGlobals(io.BytesIO(data)).load()


def load_dump_file(path: Path) -> dict[str, Any]:
    """One rank's dump file (what NCCL's watchdog writes on a timeout, or a saved JSON dump)."""
    return loads_dump(Path(path).read_bytes())


def dump_files(folder: Path, prefix: str) -> dict[int, Path]:
    """Rank -> dump file for the files `prefix<rank>` in `folder` (torch's fr_trace loader names them so)."""
    out: dict[int, Path] = {}
    for p in Path(folder).iterdir():
        tail = p.name[len(prefix):] if p.name.startswith(prefix) else ""
        if tail.isdigit():
            out[int(tail)] = p
    return out


def progress_from_files(folder: Path, prefix: str = "nccl_trace_rank_") -> dict[int, RecorderProgress]:
    """Every rank's progress from the dump files NCCL's watchdog left in `folder` (after a timeout)."""
    files = sorted(dump_files(folder, prefix).items())
    return {r: parse_flight_record(load_dump_file(p), {}, rank=r) for r, p in files}


class RecorderUnavailable(RuntimeError):
    """torch offers no flight-recorder dump for this backend, or reading it failed."""


def read_dump(backend: str) -> dict[str, Any]:
    """This process's flight record for `backend` ('nccl' or 'gloo'), as a dict; RecorderUnavailable if none."""
    import torch

    c10d = torch._C._distributed_c10d
    if "nccl" in backend:
        fn = getattr(c10d, "_dump_nccl_trace_json", None)
        if fn is not None:
            what = "_dump_nccl_trace_json"
            call = lambda: fn(includeCollectives=True, onlyActive=False)  # noqa: E731
        else:
            fn = getattr(c10d, "_dump_nccl_trace", None)
            what = "_dump_nccl_trace"
            call = lambda: fn(includeCollectives=True, includeStackTraces=False, onlyActive=False)  # noqa: E731
    else:
        fn = getattr(c10d, "_dump_fr_trace_json", None)
        what = "_dump_fr_trace_json"
        call = lambda: fn(includeCollectives=True, onlyActive=False)  # noqa: E731
    if fn is None:
        raise RecorderUnavailable(f"this torch build has no {what} (backend {backend})")
    try:
        return loads_dump(call())
    except (RuntimeError, TypeError, ValueError, pickle.UnpicklingError) as e:
        raise RecorderUnavailable(f"{what} failed: {type(e).__name__}: {e}") from e
