"""Per-rank process entry point: `python -m trainer.launch CONFIG.json` (or `--standby`).

The rank, world size and rendezvous come from the standard torch.distributed
environment variables (RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR,
MASTER_PORT); where to write comes from TRAINER_* variables. Beacons are
written atomically to a small JSON file that the supervisor on the same host
reads, and a control file (if present) can ask for a per-step delay (a slowed
rank), an exit, or a stall: the rank stops making progress at a named point of
its step (step, forward, backward, collective, p2p) while its process and its
beacon thread stay alive, the way a real hang looks.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import signal
import sys
import threading
import time
from pathlib import Path
from typing import Any

ENV_RUN_DIR = "TRAINER_RUN_DIR"
ENV_CHECKPOINT_DIR = "TRAINER_CHECKPOINT_DIR"
ENV_ATTEMPT = "TRAINER_ATTEMPT"
ENV_BEACON_FILE = "TRAINER_BEACON_FILE"
ENV_CONTROL_FILE = "TRAINER_CONTROL_FILE"
ENV_CPUS = "TRAINER_CPUS"
ENV_SAMPLE_LOG = "TRAINER_SAMPLE_LOG"
ENV_SNAPSHOT_DIR = "TRAINER_SNAPSHOT_DIR"
"""This host's part of the job's snapshot folder (set by the supervisor), replacing the config's `snapshot_dir`."""
ENV_METRICS_FILE = "TRAINER_METRICS_FILE"
"""The file in the run folder this rank appends its step rows to (default: metrics.jsonl on rank 0 only)."""
EXIT_CONFIG = 78
"""Exit code of a rank whose configuration is invalid (sysexits' EX_CONFIG): retrying cannot help."""
ENV_BEACONS = "TRAINER_BEACONS"
"""`0` turns beacons off (no flight recorder, no beacon thread or file): a baseline for their cost."""

EXIT_CHECKPOINT_UNREADABLE = 74
"""Committed checkpoints exist and none loads (each one tried was quarantined): the rank refuses to start
over from step 0. 74 is EX_IOERR of sysexits.h."""
EXIT_FINAL_CHECKPOINT_FAILED = 73
"""Training reached its last step but that step's checkpoint could not be committed (EX_CANTCREAT)."""


def write_json_atomic(path: Path, obj: dict[str, Any]) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}.tmp")
    tmp.write_text(json.dumps(obj))
    os.replace(tmp, path)


class BeaconFile:
    """Keeps the latest beacon of this rank in one file (replace, never append)."""

    def __init__(self, path: Path | None, rank: int) -> None:
        self.path, self.rank = path, rank
        self.state: dict[str, Any] = {"rank": rank, "pid": os.getpid(), "step": 0}
        self._lock = threading.Lock()  # the training loop and the beacon thread both publish

    def __call__(self, update: dict[str, Any]) -> None:
        with self._lock:
            self.state.update(update)
            self.state["time"] = time.time()
            if self.path is not None:
                write_json_atomic(self.path, self.state)


STALL_POINTS = ("step", "forward", "backward", "collective", "p2p")
STALL_POLL_S = 0.2


class ControlFile:
    """Reads fault-injection requests addressed to this rank (re-read on change).

    Keys: `step_delay_s` (sleep before every step), `exit_at_step` and
    `exit_code` (exit before that step), `stall` (one of STALL_POINTS: block at
    that point of the next step until the key is removed), and `sdc` / `nan`
    tokens (each new token fires once, from `<kind>_at_step` on). When a stall
    begins, `<control file>.stalled` records where and when, for drills that time
    the detection; the rank's beacons know nothing of it.
    """

    def __init__(self, path: Path | None, stop: threading.Event | None = None) -> None:
        self.path = path
        self.stop = stop or threading.Event()
        self._mtime = 0.0
        self.step_delay_s = 0.0
        self.exit_at_step: int | None = None
        self.exit_code = 1
        self.stall: str | None = None
        self.step = 0
        self._requests: dict[str, object] = {}
        """Fault kind -> the newest injection token seen in the file."""
        self._used: dict[str, object] = {}
        """Fault kind -> the token already acted on (each injection fires once)."""
        self._at: dict[str, int] = {}
        """Fault kind -> the first step it may fire at (`<kind>_at_step`; default: at once)."""

    def _reload(self) -> None:
        if self.path is None:
            return
        try:
            mtime = self.path.stat().st_mtime
            if mtime != self._mtime:
                self._mtime = mtime
                req = json.loads(self.path.read_text() or "{}")
                self.step_delay_s = float(req.get("step_delay_s", 0.0))
                self.exit_at_step = req.get("exit_at_step")
                self.exit_code = int(req.get("exit_code", 1))
                self.stall = req.get("stall")
                self._requests = {k: req[k] for k in ("sdc", "nan") if req.get(k) is not None}
                self._at = {k: int(req[f"{k}_at_step"]) for k in ("sdc", "nan") if req.get(f"{k}_at_step")}
        except (OSError, ValueError):
            pass

    def before_step(self, step: int) -> None:
        self.step = step
        self._reload()
        if self.exit_at_step is not None and step >= int(self.exit_at_step):
            logging.getLogger(__name__).error("injected failure: exiting with code %d before step %d",
                                              self.exit_code, step)
            os._exit(self.exit_code)
        if self.step_delay_s > 0:
            time.sleep(self.step_delay_s)

    def injected(self, kind: str) -> bool:
        """True once per new injection of `kind` ("sdc", "nan") written to the control file."""
        token = self._requests.get(kind)
        if token is None or self._used.get(kind) == token or self.step < self._at.get(kind, 0):
            return False
        self._used[kind] = token
        logging.getLogger(__name__).warning("injected fault: %s", kind)
        return True

    def at(self, point: str) -> None:
        """Block here while a stall at `point` is requested (the process and its other threads live on)."""
        if self.stall != point or self.path is None:
            return
        log = logging.getLogger(__name__)
        log.warning("injected stall at %s of step %d", point, self.step)
        marker = self.path.with_name(self.path.name + ".stalled")
        record: dict[str, Any] = {"point": point, "step": self.step, "time": time.time(), "pid": os.getpid()}
        write_json_atomic(marker, record)
        while self.stall == point and not self.stop.wait(STALL_POLL_S):
            self._reload()
        write_json_atomic(marker, {**record, "released": time.time()})
        log.warning("stall at %s released", point)


STANDBY_FLAG = "--standby"


def standby() -> int:
    """Warm standby: pay for the imports now, then wait on stdin for this process's requests.

    A restart then costs a rendezvous and a checkpoint load instead of a fresh
    interpreter importing torch on every rank. Requests are JSON lines. A
    preflight request, {"preflight": {"env": {...}, "timeout_s": s, "use_cuda":
    bool, "result": path}}, runs the rank's preflight collective here (its
    process group is made for the check and dropped after it) and writes the
    answer to `result`; more requests may follow. The assignment, {"config":
    path, "env": {...}, "log": path}, turns this process into the rank's
    trainer. End of input means the supervisor no longer needs this process.
    """
    import torch  # noqa: F401  (the slow part)

    import trainer.progress  # noqa: F401
    import trainer.train  # noqa: F401

    while True:
        line = sys.stdin.readline()
        if not line.strip():
            return 0
        req = json.loads(line)
        if "preflight" in req:
            standby_preflight(req["preflight"])
            continue
        os.environ.update(req["env"])
        fd = os.open(req["log"], os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        os.dup2(fd, 1)
        os.dup2(fd, 2)
        os.close(fd)
        return main([req["config"]])


def standby_preflight(req: dict[str, Any]) -> None:
    """Run one preflight request in the standby and write its answer (see `standby`)."""
    from trainer.preflight import run_request

    ans = run_request(req["env"], float(req["timeout_s"]), use_cuda=bool(req.get("use_cuda")))
    write_json_atomic(Path(req["result"]), ans)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv == [STANDBY_FLAG]:
        return standby()
    if len(argv) != 1:
        print(f"usage: python -m trainer.launch CONFIG.json | {STANDBY_FLAG}", file=sys.stderr)
        return 2
    logging.basicConfig(level=logging.INFO, format="%(asctime)s rank%(rank)s %(levelname)s %(message)s"
                        .replace("%(rank)s", os.environ.get("RANK", "?")))
    import torch

    from trainer.checkpoint import CheckpointLoadError, CheckpointSaveError
    from trainer.config import TrainConfig
    from trainer.train import RunContext, configure_threads, shutdown, train

    configure_threads(float(os.environ.get(ENV_CPUS, "1")))
    beacons_on = os.environ.get(ENV_BEACONS, "1") != "0"
    if beacons_on:
        # Keep the flight recorder small: only the newest entries per process group are read.
        os.environ.setdefault("TORCH_FR_BUFFER_SIZE", "256")
    try:
        cfg = TrainConfig.from_dict(json.loads(Path(argv[0]).read_text()))
    except (ValueError, TypeError, KeyError) as e:
        logging.getLogger(__name__).error("configuration error: %s: %s", type(e).__name__, e)
        return EXIT_CONFIG
    if cfg.snapshot_dir and os.environ.get(ENV_SNAPSHOT_DIR):
        cfg.snapshot_dir = os.environ[ENV_SNAPSHOT_DIR]
    rank, world = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    use_cuda = torch.cuda.is_available() and os.environ.get("CUDA_VISIBLE_DEVICES", "") != ""
    device = torch.device("cuda", local_rank % max(1, torch.cuda.device_count())) if use_cuda else torch.device("cpu")
    if device.type == "cuda":
        torch.cuda.set_device(device)
        # NCCL's watchdog writes each rank's flight record here on a collective timeout (prefix + rank).
        if "TORCH_FR_DUMP_TEMP_FILE" not in os.environ and "TORCH_NCCL_DEBUG_INFO_TEMP_FILE" not in os.environ:
            fr_dir = Path(os.environ.get(ENV_RUN_DIR, ".")) / "flight-recorder"
            fr_dir.mkdir(parents=True, exist_ok=True)
            os.environ["TORCH_FR_DUMP_TEMP_FILE"] = str(fr_dir / "nccl_trace_rank_")
    beacon_path = os.environ.get(ENV_BEACON_FILE)
    control_path = os.environ.get(ENV_CONTROL_FILE)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    beacon = BeaconFile(Path(beacon_path) if beacon_path and beacons_on else None, rank)
    control = ControlFile(Path(control_path) if control_path else None, stop)
    ctx = RunContext(
        rank=rank, world_size=world, local_rank=local_rank,
        run_dir=Path(os.environ.get(ENV_RUN_DIR, ".")),
        checkpoint_dir=Path(os.environ.get(ENV_CHECKPOINT_DIR, "checkpoints")),
        attempt=int(os.environ.get(ENV_ATTEMPT, "1")), device=device,
        beacon=beacon, stop=stop, before_step=control.before_step, injected=control.injected,
        fault_point=control.at if control_path else None,
        sample_log=Path(os.environ[ENV_SAMPLE_LOG]) / f"samples-rank{rank:05d}.jsonl"
        if os.environ.get(ENV_SAMPLE_LOG) else None,
        metrics_file=os.environ.get(ENV_METRICS_FILE) or None,
    )
    from trainer.progress import BeaconThread

    beacons = BeaconThread(beacon, progress=ctx.progress).start() if beacons_on else None
    log = logging.getLogger(__name__)
    try:
        result = train(cfg, ctx)
    except (CheckpointLoadError, CheckpointSaveError) as e:
        # One line that names the checkpoints and the OS's error, for the log and the classifier.
        log.error("%s", e)
        beacon({"phase": "failed", "error": str(e)})
        if beacons is not None:
            beacons.stop()
        shutdown()
        return EXIT_CHECKPOINT_UNREADABLE if isinstance(e, CheckpointLoadError) else EXIT_FINAL_CHECKPOINT_FAILED
    if beacons is not None:
        beacons.stop()
    shutdown()
    log.info("finished: %s", result)
    return 0


def exit_now(code: int) -> None:
    """Leave without the interpreter's teardown: with torch loaded, its finalisers take 1-2 s a rank (0.9 s
    for a bare gloo process on 2 cores), time the host and the job's wall clock would spend on nothing. Every
    file the rank writes is closed by the time `main` returns; only the streams and log handlers need a flush."""
    logging.shutdown()
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(Exception):
            stream.flush()
    os._exit(code)


if __name__ == "__main__":
    exit_now(main())
