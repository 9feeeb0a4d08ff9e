"""Hang drills on local trainer processes (no Ray): stall a rank for real, run the hang detector.

The ranks run as plain gloo processes (`trainer.local_run`), the victim is
stalled through its control file (it blocks at the requested point of its step
while its process and beacon thread live on), and `LocalHangWatch` reads the
beacon files and tracks progress the way the controller's supervision loop
does, then calls the same `hang_limit` and `detect_hang`. Tests and
`bench/hang_matrix.py` drive it; several stalls run in turn on one set of
processes (each released before the next), so one spawn serves many cells.
"""

from __future__ import annotations

import json
import os
import time
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from health.detectors import HangConfig, detect_hang, hang_limit
from health.observations import Finding, RankObservation, observation_from_poll
from trainer.local_run import LocalRanks, start_local

POLL_INTERVAL_S = 0.25
"""As often as the controller looks at its agents' reports."""


def process_stopped(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] in ("T", "t")
    except (OSError, IndexError):
        return False


def read_json(path: Path) -> dict[str, Any] | None:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def write_json(path: Path, obj: dict[str, Any]) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(obj))
    os.replace(tmp, path)


class LocalHangWatch:
    """The controller's hang supervision (progress, step times, limit, detector) over local beacon files."""

    def __init__(self, ranks: LocalRanks, layout: dict[str, int], cfg: HangConfig, host: str = "localhost") -> None:
        self.ranks, self.layout, self.cfg, self.host = ranks, layout, cfg, host
        self.last_progress = time.time()
        self.last_step = -1
        self.first_step_seen = False
        self.step_times: deque[float] = deque(maxlen=20)
        self.limit = cfg.timeout_s
        self.polls: list[dict[str, Any]] = []

    def observe(self, now: float) -> list[RankObservation]:
        self.polls = []
        for rank, proc in enumerate(self.ranks.procs):
            rc = proc.poll()
            self.polls.append({"rank": rank, "running": rc is None, "returncode": rc,
                               "beacon": read_json(self.ranks.beacon_path(rank)),
                               "stopped": rc is None and process_stopped(proc.pid)})
        return [observation_from_poll(p, self.host, now) for p in self.polls]

    def poll(self, now: float | None = None) -> tuple[list[RankObservation], Finding | None]:
        now = time.time() if now is None else now
        obs = self.observe(now)
        step = min(o.step for o in obs)
        if self.last_step < 0:
            self.last_step = step
        if step > self.last_step:
            self.first_step_seen = True
            self.last_step, self.last_progress = step, now
            self.step_times.extend(o.step_seconds for o in obs[:1] if o.step_seconds)
        checkpointing = any(o.phase == "checkpoint" for o in obs) or not self.first_step_seen
        self.limit = hang_limit(list(self.step_times), self.cfg, checkpointing=checkpointing)
        return obs, detect_hang(obs, self.last_progress, now, self.limit, self.layout)

    def snapshot(self, now: float) -> dict[str, Any]:
        """The detector's input as a small JSON object (golden files)."""
        beacons = []
        for p in self.polls:
            b = dict(p["beacon"] or {})
            b.pop("ready", None)
            beacons.append({**p, "beacon": b})
        return {"layout": self.layout, "now": now, "last_progress_at": self.last_progress, "limit_s": self.limit,
                "polls": beacons}


@dataclass
class Cell:
    victim: int
    where: str


@dataclass
class CellResult:
    layout: dict[str, int]
    victim: int
    where: str
    named: list[int] = field(default_factory=list)
    certain: bool = False
    summary: str = ""
    waiting_in: dict[str, Any] | None = None
    limit_s: float | None = None
    stalled_at: float | None = None
    detected_at: float | None = None
    error: str = ""
    snapshot: dict[str, Any] | None = None

    @property
    def detection_s(self) -> float | None:
        if self.stalled_at is None or self.detected_at is None:
            return None
        return self.detected_at - self.stalled_at

    def to_dict(self) -> dict[str, Any]:
        return {"layout": self.layout, "victim": self.victim, "where": self.where, "named": self.named,
                "certain": self.certain, "summary": self.summary, "waiting_in": self.waiting_in,
                "limit_s": self.limit_s, "detection_s": self.detection_s, "error": self.error}


def drill_config(layout: dict[str, int], *, data_glob: str, dim: int = 32, layers: int = 4) -> dict[str, Any]:
    """A tiny model that trains until killed, without checkpoints (they would lift the hang limit)."""
    gbs = 2 * layout.get("dp", 1) * max(layout.get("pp", 1), 1)
    return {
        "model": {"dim": dim, "n_layers": layers, "n_heads": 4, "n_kv_heads": 2, "vocab_size": 257,
                  "max_seq_len": 64},
        "parallel": {"dp": layout.get("dp", 1), "tp": layout.get("tp", 1), "pp": layout.get("pp", 1),
                     "cp": layout.get("cp", 1)},
        "optim": {"lr_peak": 0.01, "lr_min": 0.001, "warmup_steps": 2},
        "steps": 100_000, "seed": 5, "global_batch_size": gbs, "micro_batch_size": 1, "seq_len": 32,
        "data_paths": [data_glob], "data_max_bytes": 100_000,
        "checkpoint_interval_steps": 1_000_000, "checkpoint_async": False, "checkpoint_keep_last": 1,
        "collective_timeout_s": 120,
    }


def _wait_steps(watch: LocalHangWatch, steps: int, timeout_s: float) -> None:
    """Poll (feeding the watch) until every rank has completed `steps` more steps."""
    deadline = time.time() + timeout_s
    start = None
    while time.time() < deadline:
        obs, _ = watch.poll()
        dead = [o.rank for o in obs if not o.alive]
        if dead:
            raise RuntimeError(f"ranks {dead} exited: {tail(watch.ranks.logs[dead[0]])}")
        if all(o.heartbeat for o in obs):
            low = min(o.step for o in obs)
            start = low if start is None else start
            if low >= start + steps:
                return
        time.sleep(POLL_INTERVAL_S)
    raise TimeoutError(f"no {steps} steps of progress in {timeout_s:.0f} s")


def tail(path: str, n: int = 2000) -> str:
    try:
        return Path(path).read_text()[-n:]
    except OSError:
        return ""


def run_cells(layout: dict[str, int], cells: Sequence[Cell], run_dir: Path, *, data_glob: str,
              hang_timeout_s: float = 60.0, warm_steps: int = 4, keep_snapshots: bool = False) -> list[CellResult]:
    """Start the layout's ranks once and stall each cell's victim in turn; one result per cell."""
    world = 1
    for v in layout.values():
        world *= v
    cfg = drill_config(layout, data_glob=data_glob)
    ranks = start_local(cfg, run_dir, control={r: {} for r in range(world)})
    results: list[CellResult] = []
    try:
        for cell in cells:
            res = CellResult(dict(layout), cell.victim, cell.where)
            results.append(res)
            watch = LocalHangWatch(ranks, layout, HangConfig(timeout_s=hang_timeout_s))
            _wait_steps(watch, warm_steps, 300)
            marker = Path(str(ranks.control_path(cell.victim)) + ".stalled")
            marker.unlink(missing_ok=True)
            write_json(ranks.control_path(cell.victim), {"stall": cell.where})
            deadline = time.time() + hang_timeout_s + 60
            finding = None
            while time.time() < deadline:
                _, finding = watch.poll()
                if finding is not None:
                    break
                time.sleep(POLL_INTERVAL_S)
            stalled = read_json(marker)
            res.stalled_at = stalled["time"] if stalled else None
            res.limit_s = watch.limit
            if finding is None:
                res.error = "no hang detected"
            else:
                a = finding.evidence.get("attribution", {})
                res.named, res.certain, res.summary = list(finding.ranks), bool(a.get("certain")), finding.summary
                res.waiting_in, res.detected_at = a.get("waiting_in"), finding.detected_at
                if stalled is None:
                    res.error = "hang detected before the victim stalled"
                if keep_snapshots:
                    res.snapshot = {"victim": cell.victim, "where": cell.where, **watch.snapshot(finding.detected_at)}
            write_json(ranks.control_path(cell.victim), {})
            if res.error and stalled is None:
                break
    finally:
        ranks.kill()
    return results
