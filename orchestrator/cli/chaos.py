"""`orchestrator chaos`: inject real faults into a running job (tests, demos, drills).

kill sends SIGKILL to a rank's trainer process, hang sends SIGSTOP, stall makes
the rank stop making progress at a point of its step while its process and its
beacon thread stay alive (how real hangs look), slow makes the rank sleep
before each step (a real delay inside the rank). Nothing here talks to the
controller's decision logic: the faults must be noticed the way real ones are.
"""

from __future__ import annotations

import signal
from typing import Annotated, Any

import typer

from orchestrator.catalog.repository import TERMINAL_JOB_STATES
from orchestrator.cli.common import EXIT_USAGE, DbOpt, StateDirOpt, console, fail, open_catalog
from orchestrator.cluster import disconnect, join
from trainer.launch import STALL_POINTS

app = typer.Typer(no_args_is_help=True, help="Inject real faults into a running job.")

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
        import ray

        from orchestrator.controller.controller import NAMESPACE, controller_name

        ctrl = ray.get_actor(controller_name(job), namespace=NAMESPACE)
        workers = ray.get(ctrl.worker_handles.remote(), timeout=30)
    except (ConnectionError, ValueError, RuntimeError) as e:
        fail(f"cannot reach the controller of job {job!r} at {row.ray_address}: {str(e).splitlines()[0]}")
    if len(workers) <= rank:
        disconnect()
        fail(f"job {job!r} has no running rank {rank} right now (state {row.state})")
    return workers[rank]


def _signal(job: str, rank: int, sig: int, state_dir: Any, db: str | None) -> None:
    w = _worker(job, rank, state_dir, db)
    import ray

    try:
        ok = ray.get(w.send_signal.remote(sig), timeout=30)
    finally:
        disconnect()
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
    if delay_s < 0:
        fail("--delay-s must be >= 0", EXIT_USAGE)
    w = _worker(job, rank, state_dir_opt, db)
    import ray

    try:
        ray.get(w.set_step_delay.remote(delay_s), timeout=30)
    finally:
        disconnect()
    console.print(f"rank {rank} of job {job} now sleeps {delay_s:g} s before each step")


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
