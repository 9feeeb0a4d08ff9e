"""`orchestrator chaos`: inject real faults into a running job (tests, demos, drills).

kill sends SIGKILL to a rank's trainer process, hang sends SIGSTOP, stall makes
the rank stop making progress at a point of its step while its process and its
beacon thread stay alive (how real hangs look), slow makes the rank sleep
before each step (a real delay inside the rank). Hardware faults that cannot be
caused here go through the same adapters the probes and the trainer read: xid
makes the (fake) NVML of the rank's host report an Xid, sdc perturbs the rank's
result of its next SDC check, nan poisons one batch. Nothing here talks to the
controller's decision logic: the faults must be noticed the way real ones are.
"""

from __future__ import annotations

import math
import signal
import time
from typing import Annotated, Any

import typer

from orchestrator.catalog.repository import TERMINAL_JOB_STATES
from orchestrator.cli.common import EXIT_USAGE, DbOpt, StateDirOpt, console, fail, open_catalog
from orchestrator.cluster import disconnect, join
from trainer.launch import STALL_POINTS

app = typer.Typer(no_args_is_help=True, help="Inject real faults into a running job.")

GANG_WAIT_S = 10.0
"""How long a fault waits for the job's gang when it has none (a restart in progress)."""

RankOpt = Annotated[int, typer.Option("--rank", "-r", help="Global rank to hit")]
JobArg = Annotated[str, typer.Argument(help="Job name")]


def _worker(job: str, rank: int, state_dir: Any, db: str | None, where: str | None = None) -> Any:
    catalog = open_catalog(state_dir, db, must_exist=True)
    row = catalog.get_job(job)
    if row is None:
        fail(f"no job named {job!r} in the catalog", EXIT_USAGE)
    if row.state in TERMINAL_JOB_STATES:
        fail(f"job {job!r} is not running (state {row.state})", EXIT_USAGE)
    if not 0 <= rank < row.world_size:
        fail(f"--rank {rank} is out of range: job {job!r} has ranks 0..{row.world_size - 1}", EXIT_USAGE)
    if where == "p2p" and int((row.spec or {}).get("parallelism", {}).get("pp", 1)) < 2:
        fail(f"--where p2p needs a pipelined job (pp > 1); job {job!r} has no pipeline", EXIT_USAGE)
    try:
        join(row.ray_address, embedded=row.ray_embedded)
        from orchestrator import client

        workers = client.rank_handles(job)
        # Between attempts (a restart places and starts a gang) there are no supervisors for a moment.
        deadline = time.monotonic() + GANG_WAIT_S
        while len(workers) <= rank and time.monotonic() < deadline:
            time.sleep(0.5)
            workers = client.rank_handles(job)
    except (ConnectionError, ValueError, RuntimeError) as e:
        fail(f"cannot reach the controller of job {job!r} at {row.ray_address}: {str(e).splitlines()[0]}")
    if len(workers) <= rank:
        disconnect()
        fail(f"job {job!r} has no running rank {rank} right now (state {row.state})")
    return workers[rank]


def _ask(job: str, rank: int, ref: Any) -> Any:
    """The answer of rank `rank`'s supervisor; one line when it is gone (the job ended or is restarting)."""
    import ray

    try:
        return ray.get(ref, timeout=30)
    except (ray.exceptions.RayError, ray.exceptions.GetTimeoutError) as e:
        fail(f"rank {rank} of job {job!r} cannot be reached (the job may have ended or be restarting): "
             f"{type(e).__name__}")
    finally:
        disconnect()


def _signal(job: str, rank: int, sig: int, state_dir: Any, db: str | None) -> None:
    w = _worker(job, rank, state_dir, db)
    ok = _ask(job, rank, w.send_signal.remote(sig))
    if not ok:
        fail(f"rank {rank} of job {job!r} has no live process to signal")
    console.print(f"sent {signal.Signals(sig).name} to rank {rank} of job {job}")


@app.command()
def kill(job: JobArg, rank: RankOpt, db: DbOpt = None, state_dir_opt: StateDirOpt = None) -> None:
    """SIGKILL a rank's trainer process."""
    _signal(job, rank, signal.SIGKILL, state_dir_opt, db)


@app.command()
def hang(job: JobArg, rank: RankOpt, db: DbOpt = None, state_dir_opt: StateDirOpt = None) -> None:
    """SIGSTOP a rank's trainer process: it freezes mid-collective, like a hung GPU."""
    _signal(job, rank, signal.SIGSTOP, state_dir_opt, db)


@app.command()
def slow(job: JobArg, rank: RankOpt,
         delay_s: Annotated[float, typer.Option("--delay-s", help="Seconds to sleep before every step")] = 1.0,
         db: DbOpt = None, state_dir_opt: StateDirOpt = None) -> None:
    """Make a rank sleep before each step (0 restores it)."""
    if not 0 <= delay_s < math.inf:
        fail(f"--delay-s must be a number of seconds >= 0, not {delay_s:g}", EXIT_USAGE)
    w = _worker(job, rank, state_dir_opt, db)
    _ask(job, rank, w.set_step_delay.remote(delay_s))
    console.print(f"rank {rank} of job {job} now sleeps {delay_s:g} s before each step")


def _call(job: str, rank: int, state_dir: Any, db: str | None, method: str, *args: Any, **kwargs: Any) -> Any:
    w = _worker(job, rank, state_dir, db)
    return _ask(job, rank, getattr(w, method).remote(*args, **kwargs))


def _job_reliability(job: str, state_dir: Any, db: str | None) -> dict[str, Any]:
    row = open_catalog(state_dir, db, must_exist=True).get_job(job)
    if row is None:
        fail(f"no job named {job!r} in the catalog", EXIT_USAGE)
    return dict((row.spec or {}).get("reliability") or {})


@app.command()
def xid(job: JobArg, rank: RankOpt,
        code: Annotated[int, typer.Option("--code", help="Xid number, e.g. 79 (fallen off the bus), 48 (DBE)")],
        gpu: Annotated[int, typer.Option("--gpu", help="GPU index on the rank's host")] = 0,
        db: DbOpt = None, state_dir_opt: StateDirOpt = None) -> None:
    """Make the fake NVML of a rank's host report an Xid (the GPU probe picks it up)."""
    if not 1 <= code <= 999:
        fail(f"--code must be an Xid number between 1 and 999, not {code}", EXIT_USAGE)
    if gpu < 0:
        fail(f"--gpu must be a GPU index >= 0, not {gpu}", EXIT_USAGE)
    event = _call(job, rank, state_dir_opt, db, "inject_xid", code, gpu)
    if event is None:
        fail(f"rank {rank}'s host reads a real NVML (ORCHESTRATOR_FAKE_NVML is not 1 where job {job!r} runs): "
             f"an Xid cannot be injected there")
    console.print(f"Xid {code} on GPU {gpu} of rank {rank}'s host (job {job})")


@app.command()
def sdc(job: JobArg, rank: RankOpt, db: DbOpt = None, state_dir_opt: StateDirOpt = None) -> None:
    """Perturb a rank's result of its next SDC check (as a GPU computing wrong values would)."""
    every = int(_job_reliability(job, state_dir_opt, db).get("sdc_check_interval_steps") or 0)
    if every <= 0:
        fail(f"job {job!r} runs no SDC check (reliability.sdc_check_interval_steps is 0)", EXIT_USAGE)
    _call(job, rank, state_dir_opt, db, "control", sdc=time.time())
    console.print(f"rank {rank} of job {job} computes a wrong result at its next SDC check (every {every} steps)")


@app.command()
def nan(job: JobArg, rank: Annotated[int, typer.Option("--rank", "-r", help="Global rank whose batch to poison")] = 0,
        db: DbOpt = None, state_dir_opt: StateDirOpt = None) -> None:
    """Poison the next batch of a rank: its loss turns NaN on every replica (the loss is all-reduced)."""
    _call(job, rank, state_dir_opt, db, "control", nan=time.time())
    console.print(f"the next batch of rank {rank} of job {job} is poisoned")


@app.command()
def stall(job: JobArg, rank: RankOpt,
          where: Annotated[str, typer.Option("--where", help=f"Where in its step the rank stops: "
                                             f"{', '.join(STALL_POINTS)}")] = "step",
          release: Annotated[bool, typer.Option("--release", help="Let a stalled rank go on")] = False,
          db: DbOpt = None, state_dir_opt: StateDirOpt = None) -> None:
    """Make a rank stop making progress at a point of its step, alive (no SIGSTOP): a hang that looks real."""
    if where not in STALL_POINTS:
        fail(f"--where {where!r} is not one of {', '.join(STALL_POINTS)}", EXIT_USAGE)
    w = _worker(job, rank, state_dir_opt, db, None if release else where)
    import ray

    try:
        ray.get(w.set_stall.remote(None if release else where), timeout=30)
    finally:
        disconnect()
    console.print(f"rank {rank} of job {job} " + ("released" if release else f"now stalls at its next {where}"))
