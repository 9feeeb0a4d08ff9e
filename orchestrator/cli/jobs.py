"""`submit`, `status`, `jobs` and `stop`: the job lifecycle commands."""

from __future__ import annotations

import shutil
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from orchestrator.catalog.db import CatalogError, as_utc
from orchestrator.catalog.models import Job
from orchestrator.catalog.repository import TERMINAL_JOB_STATES, Catalog, JobStatus, NotFoundError
from orchestrator.cli.common import (
    EXIT_FAILED,
    EXIT_USAGE,
    DbOpt,
    JsonOpt,
    StateDirOpt,
    WideOpt,
    console,
    err_console,
    fail,
    no_conflict,
    open_catalog,
    print_json,
)
from orchestrator.cli.layouts import JOB_LAYOUTS, JOB_WIDE, RANK_LAYOUTS, RANK_WIDE
from orchestrator.cli.tables import print_table
from orchestrator.cluster import connect, disconnect, join, resolve_address
from orchestrator.paths import db_url, run_dir, state_dir
from orchestrator.spec import JobFileError, JobSpec, job_checkpoint_dir, load_job_file
from trainer.checkpoint_files import committed_checkpoints

CONTROLLER_HEARTBEAT_STALE_S = 30.0
"""A controller whose catalog heartbeat is older than this is taken for dead (it writes one every 2 s while
running: HEARTBEAT_INTERVAL_S in the controller; the CLI does not import the controller to read it)."""


def _controller_alive(job: Job) -> bool:
    hb = as_utc(job.controller_heartbeat_at)
    return hb is not None and datetime.now(UTC) - hb < timedelta(seconds=CONTROLLER_HEARTBEAT_STALE_S)


def _check_local_resources(spec: JobSpec, address: str | None) -> None:
    if address is None and spec.resources.gpus_per_rank > 0:
        import torch

        have = torch.cuda.device_count()
        need = spec.world_size * spec.resources.gpus_per_rank
        if have < need:
            fail(f"resources.gpus_per_rank: {spec.world_size} ranks x {spec.resources.gpus_per_rank:g} GPU "
                 f"need {need:g} GPUs; this machine has {have}", EXIT_USAGE)


def submit(
    job_file: Annotated[Path, typer.Argument(help="Job file (YAML)")],
    address: Annotated[str | None, typer.Option(
        "--address", help="Ray cluster address (default: $RAY_ADDRESS, else an embedded local cluster)")] = None,
    db: DbOpt = None,
    follow: Annotated[bool, typer.Option("--follow/--no-follow", help="Follow the job until it ends")] = True,
    fresh: Annotated[bool, typer.Option(
        "--fresh", help="Discard the job's earlier checkpoints, metrics and history")] = False,
    metrics_port: Annotated[int | None, typer.Option(
        "--metrics-port", min=0, max=65535,
        help="Port of the job's /metrics (overrides metrics.port of the job file; 0: any free port)")] = None,
    state_dir_opt: StateDirOpt = None,
    json_out: JsonOpt = False,
) -> None:
    """Validate a job file and run it on Ray."""
    try:
        spec = load_job_file(job_file)
    except JobFileError as e:
        fail(str(e), EXIT_USAGE)
    if metrics_port is not None:
        spec = spec.model_copy(update={"metrics": spec.metrics.model_copy(update={"port": metrics_port})})
    addr = resolve_address(address)
    if addr is None and not follow:
        fail("--no-follow needs a Ray cluster that outlives this command (--address or RAY_ADDRESS); "
             "the embedded cluster ends with it", EXIT_USAGE)
    _check_local_resources(spec, addr)
    sd = state_dir(state_dir_opt)
    catalog = open_catalog(state_dir_opt, db, migrate=True)
    existing = catalog.job_row(spec.name)
    if existing is not None and existing.state not in TERMINAL_JOB_STATES and _controller_alive(existing):
        fail(f"job {spec.name!r} is already {existing.state} (attempt {existing.current_attempt}); "
             f"stop it first with 'orchestrator stop {spec.name}'", EXIT_USAGE)
    rdir = run_dir(sd, spec.name)
    ckdir = job_checkpoint_dir(spec, rdir)
    _check_legacy_layout(spec)
    if existing is not None and existing.state == "succeeded" and not fresh:
        _continue_or_exit(spec, existing, ckdir, json_out)
    if fresh:
        _delete_for_fresh(catalog, spec, rdir, ckdir, json_out)
    conn = _connect_for(spec, addr, catalog.cordoned_hosts())
    try:
        catalog.create_job(spec.name, spec.model_dump(mode="json", by_alias=True), spec.world_size,
                           spec.training.steps, str(rdir), conn.address, conn.embedded)
        rdir.mkdir(parents=True, exist_ok=True)
        ctrl = _start_controller(spec, db_url(sd, db), rdir)
        if not follow:
            if json_out:
                print_json({"job": spec.name, "address": conn.address, "state": "pending"})
            else:
                console.print(spec.name)
            return
        code = _follow(catalog, spec, ctrl, json_out)
    finally:
        if conn.embedded:
            disconnect()
    raise typer.Exit(code)


def _check_legacy_layout(spec: JobSpec) -> None:
    """Refuse to run over checkpoints written straight into `checkpoint.folder` (before per-job folders)."""
    folder = spec.checkpoint.folder
    if folder and committed_checkpoints(folder):
        fail(f"checkpoint.folder {folder} holds checkpoints directly (step-* folders, written before each job "
             f"got its own folder); move the ones of job {spec.name!r} into {Path(folder) / spec.name}", EXIT_USAGE)


def _continue_or_exit(spec: JobSpec, job: Job, ckdir: Path, json_out: bool) -> None:
    """A succeeded job continues only to a larger `training.steps`, from its newest committed checkpoint."""
    committed = committed_checkpoints(ckdir)
    newest = committed[-1].step if committed else None
    if spec.training.steps <= max(job.last_step, newest or 0):
        console.print(f"job {spec.name!r} already succeeded at step {job.last_step}/{job.steps_total}; "
                      "raise training.steps to train it further, or pass --fresh to run it again from step 0",
                      soft_wrap=True)
        raise typer.Exit(0)
    if newest is None:
        fail(f"job {spec.name!r} succeeded at step {job.last_step} but {ckdir} holds no committed checkpoint "
             "to continue from; pass --fresh to run it again from step 0")
    (err_console if json_out else console).print(
        f"job {spec.name!r} succeeded at step {job.last_step}; continuing to step {spec.training.steps} "
        f"from its newest committed checkpoint (step {newest})", highlight=False, soft_wrap=True)


def _delete_for_fresh(catalog: Catalog, spec: JobSpec, rdir: Path, ckdir: Path, json_out: bool) -> None:
    """Say what --fresh deletes (this job's folders and history only), then delete it or fail with one line."""
    out = err_console if json_out else console
    n = len(committed_checkpoints(ckdir))
    out.print(f"--fresh: deleting job {spec.name!r}: checkpoints {ckdir} ({n} committed), "
              f"run folder {rdir}, and its catalog history", highlight=False, soft_wrap=True)
    for path in dict.fromkeys((ckdir, rdir)):
        try:
            shutil.rmtree(path)
        except FileNotFoundError:
            continue
        except OSError as e:
            fail(f"--fresh: cannot delete {path}: {e.strerror or e}")
    catalog.delete_job(spec.name)


def _connect_for(spec: JobSpec, addr: str | None, cordoned: set[str]) -> Any:
    import ray

    from orchestrator.controller.placement import capacity_error, node_views

    r = spec.resources
    need = (spec.world_size + spec.reliability.spares) * r.cpus_per_rank
    try:
        conn = connect(addr, num_cpus=need)
    except (ConnectionError, RuntimeError, ValueError) as e:
        fail(f"cannot connect to the Ray cluster at {addr}: {str(e).splitlines()[0]}")
    # The embedded cluster is sized for the job, but its one host may be cordoned.
    err = capacity_error(node_views(ray.nodes()), cordoned, spec.world_size, r.cpus_per_rank, r.gpus_per_rank,
                         spec.parallelism.tp)
    if err is not None:
        disconnect()
        fail(f"resources: {err}", EXIT_USAGE)
    return conn


def _start_controller(spec: JobSpec, url: str, rdir: Path) -> Any:
    from orchestrator import client

    return client.start(spec, url, rdir)


def _follow(catalog: Catalog, spec: JobSpec, ctrl: Any, json_out: bool) -> int:
    import ray

    try:
        with Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                      TextColumn("{task.fields[info]}"), TimeElapsedColumn(), console=console,
                      disable=json_out, transient=False) as bar:
            task = bar.add_task(spec.name, total=spec.training.steps, info="starting")
            while True:
                job = _require_row(catalog, spec.name)
                loss = f"loss {job.last_loss:.4f}" if job.last_loss is not None else ""
                tps = f"{job.tokens_per_second:,.0f} tok/s" if job.tokens_per_second else ""
                info = "  ".join(x for x in (job.state, f"attempt {job.current_attempt}", loss, tps) if x)
                bar.update(task, completed=job.last_step, info=info)
                if job.state in TERMINAL_JOB_STATES:
                    break
                time.sleep(0.5)
    except KeyboardInterrupt:
        console.print("stopping the job (Ctrl-C) ...")
        try:
            ray.get(ctrl.stop.remote("interrupted by the operator (Ctrl-C)"), timeout=30)
            ray.get(ctrl.wait.remote(120), timeout=150)
        except Exception as e:  # the cluster may already be going down
            console.print(f"could not stop cleanly: {e}", markup=False)
        return 130
    return _report_end(_require_row(catalog, spec.name), json_out)


def _require_row(catalog: Catalog, name: str) -> Job:
    """The job's own row (no attempts, no ranks): what the follow loop polls twice a second."""
    job = catalog.job_row(name)
    if job is None:
        raise NotFoundError(f"no job named {name!r} in the catalog")
    return job


def _report_end(job: Job, json_out: bool) -> int:
    if json_out:
        print_json(job_summary(job))
    elif job.state == "succeeded":
        loss = "-" if job.last_loss is None else f"{job.last_loss:.4f}"
        console.print(f"job {job.name} succeeded: step {job.last_step}/{job.steps_total}, "
                      f"{job.current_attempt} attempt(s), final loss {loss}")
    else:
        console.print(f"[red]job {job.name} {job.state}:[/red] {escape(str(job.reason))}")
    return 0 if job.state == "succeeded" else EXIT_FAILED


def job_summary(job: Job, status: JobStatus | None = None) -> dict[str, Any]:
    """The job as JSON; with `status` (from `Catalog.job_status`) also its attempts and current ranks."""
    out: dict[str, Any] = {
        "job": job.name, "state": job.state, "step": job.last_step, "steps": job.steps_total,
        "loss": job.last_loss, "tokens_per_second": job.tokens_per_second, "attempt": job.current_attempt,
        "world_size": job.world_size, "reason": job.reason, "submitted_at": as_utc(job.submitted_at),
        "started_at": as_utc(job.started_at), "ended_at": as_utc(job.ended_at),
        "controller_alive": job.state not in TERMINAL_JOB_STATES and _controller_alive(job),
        "run_dir": job.run_dir,
    }
    out["metrics_url"] = job.metrics_url if out["controller_alive"] else None
    if status is not None:
        out["attempts"] = [
            {"attempt": a.number, "state": a.state, "start_step": a.start_step, "end_step": a.end_step,
             "started_at": as_utc(a.started_at), "ended_at": as_utc(a.ended_at), "reason": a.reason,
             "layout": a.layout}
            for a in status.attempts
        ]
        current = next((a for a in status.attempts if a.number == job.current_attempt), None)
        lay = {} if current is None else (current.layout or {})
        out["spares"] = list(lay.get("spares", []))
        out["checkpoint_interval_steps"] = lay.get("checkpoint_interval_steps")
        out["snapshot_interval_steps"] = lay.get("snapshot_interval_steps")
        out["snapshot_step"] = lay.get("snapshot_step")
        out["resumed_from"] = lay.get("resumed_from")
        out["ranks"] = [] if current is None else [
            {"rank": r.rank, "host": r.host, "pid": r.pid, "state": r.state, "step": r.step,
             "exit_code": r.exit_code, "signal": r.signal, "log": r.log_path}
            for r in status.current_ranks
        ]
    return out


def status(
    job: Annotated[str | None, typer.Argument(help="Job name (default: every job)")] = None,
    db: DbOpt = None,
    state_dir_opt: StateDirOpt = None,
    json_out: JsonOpt = False,
    wide: WideOpt = False,
) -> None:
    """State, step, attempt and ranks of a job (or of every job)."""
    no_conflict(json_out, wide)
    catalog = open_catalog(state_dir_opt, db, must_exist=True)
    if job is None:
        jobs(db=db, state_dir_opt=state_dir_opt, json_out=json_out, wide=wide)
        return
    st = _job_status(catalog, job)
    row = st.job
    summary = job_summary(row, st)
    if json_out:
        print_json(summary)
        return
    loss = "-" if row.last_loss is None else f"{row.last_loss:.4f}"
    console.print(f"[bold]{row.name}[/bold]  {row.state}  step {row.last_step}/{row.steps_total}  "
                  f"loss {loss}  attempt {row.current_attempt}  ranks {row.world_size}")
    if row.reason:
        console.print(f"reason: {row.reason}", markup=False)
    if summary["spares"]:
        console.print(f"spare hosts held: {', '.join(summary['spares'])}", markup=False)
    recovery = [f"checkpoint every {summary['checkpoint_interval_steps']} steps (auto)"
                if summary.get("checkpoint_interval_steps") else "",
                f"snapshot every {summary['snapshot_interval_steps']} steps (auto)"
                if summary.get("snapshot_interval_steps") else "",
                f"snapshot held by every rank: step {summary['snapshot_step']}" if summary.get("snapshot_step") else "",
                "resumed from {kind} at step {step}".format(**summary["resumed_from"])
                if summary.get("resumed_from") else ""]
    if any(recovery):
        console.print("; ".join(x for x in recovery if x), markup=False)
    if summary["metrics_url"]:
        console.print(f"metrics: {summary['metrics_url']}", markup=False)
    print_table(console, [RANK_WIDE] if wide else RANK_LAYOUTS, summary["ranks"], wide=wide)


def _job_status(catalog: Catalog, name: str) -> JobStatus:
    try:
        st = catalog.job_status(name)
    except CatalogError as e:
        fail(str(e))
    if st is None:
        fail(f"no job named {name!r} in the catalog", EXIT_USAGE)
    return st


def _get_job(catalog: Catalog, name: str) -> Job:
    try:
        row = catalog.job_row(name)
    except CatalogError as e:
        fail(str(e))
    if row is None:
        fail(f"no job named {name!r} in the catalog", EXIT_USAGE)
    return row


def jobs(db: DbOpt = None, state_dir_opt: StateDirOpt = None, json_out: JsonOpt = False,
         wide: WideOpt = False) -> None:
    """Every job in the catalog, newest first."""
    no_conflict(json_out, wide)
    catalog = open_catalog(state_dir_opt, db, must_exist=True)
    rows = catalog.list_jobs()
    if json_out:
        print_json([job_summary(j) for j in rows])
        return
    print_table(console, [JOB_WIDE] if wide else JOB_LAYOUTS, rows, wide=wide)


def stop(
    job: Annotated[str, typer.Argument(help="Job name")],
    db: DbOpt = None,
    state_dir_opt: StateDirOpt = None,
    wait: Annotated[bool, typer.Option("--wait/--no-wait", help="Wait until the job has stopped")] = True,
) -> None:
    """Stop a running job; recorded as a planned interruption."""
    catalog = open_catalog(state_dir_opt, db, must_exist=True)
    row = _get_job(catalog, job)
    if row.state in TERMINAL_JOB_STATES:
        fail(f"job {job!r} is not running (state {row.state})", EXIT_USAGE)
    try:
        join(row.ray_address, embedded=row.ray_embedded)
        from orchestrator import client

        client.stop(job, "stopped by the operator (orchestrator stop)", wait_s=300 if wait else None)
    except (ConnectionError, ValueError, RuntimeError) as e:
        fail(f"cannot reach the controller of job {job!r} at {row.ray_address}: {str(e).splitlines()[0]}")
    finally:
        disconnect()
    console.print(f"job {job} {_require_row(catalog, job).state}")
