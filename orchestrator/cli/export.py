"""`orchestrator export JOB --format hf --output DIR`: a job's trained weights as a Hugging Face folder.

Reads one committed checkpoint of the job, whatever layout wrote it, into one
process (`trainer.consolidate`), and writes config.json, generation_config.json
and safetensors weights (`trainer.hf`). Everything is written into a temporary
folder next to DIR and renamed at the end, so a failed or interrupted export
leaves no half-written DIR behind.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from pydantic import ValidationError

from orchestrator.catalog.db import CatalogError
from orchestrator.cli.common import EXIT_USAGE, DbOpt, JsonOpt, StateDirOpt, console, fail, open_catalog, print_json
from orchestrator.spec import JobSpec

if TYPE_CHECKING:
    from trainer.checkpoint import CheckpointInfo

FORMATS = ("hf",)
DTYPE_NAMES = ("float32", "bfloat16", "float16")


def checkpoint_folders(spec: JobSpec, run_dir: Path, recorded: list[str]) -> list[Path]:
    """Where the job's checkpoints may be: the folders of the commits the catalog recorded
    (newest first), then the folder the job file implies. The first one holding a commit wins."""
    out: list[Path] = []
    from orchestrator.spec import job_checkpoint_dir

    implied = job_checkpoint_dir(spec, run_dir)
    for p in [*(Path(r).parent for r in reversed(recorded) if r), implied]:
        if p not in out:
            out.append(p)
    return out


def _output_error(output: Path) -> str | None:
    if output.is_dir():
        return None if not any(output.iterdir()) else f"--output {output} exists and is not empty"
    if output.exists():
        return f"--output {output} exists and is not a folder"
    return None


def _usual_modes(folder: Path) -> None:
    """mkdtemp (and safetensors' writer) make private files; the result is an ordinary folder."""
    mask = os.umask(0)
    os.umask(mask)
    folder.chmod(0o777 & ~mask)
    for f in folder.iterdir():
        f.chmod(0o666 & ~mask)


def _publish(tmp: Path, output: Path) -> None:
    """Move the finished folder into place; an empty DIR left by the user is replaced."""
    if output.is_dir():
        output.rmdir()  # fails (OSError) if something appeared in it meanwhile
    os.replace(tmp, output)


def export(
    job: Annotated[str, typer.Argument(help="Job name")],
    output: Annotated[Path, typer.Option("--output", "-o", help="Folder to write (must not exist, or be empty)")],
    format_: Annotated[str, typer.Option("--format", help="hf: Hugging Face Llama folder (safetensors)")] = "hf",
    step: Annotated[int | None, typer.Option("--step", help="Checkpoint step (default: the newest committed)")] = None,
    dtype: Annotated[str | None, typer.Option(
        "--dtype", help="float32, bfloat16 or float16 (default: the job's training dtype)")] = None,
    max_shard_mb: Annotated[int, typer.Option(
        "--max-shard-mb", min=1, help="Split the weights into shards of at most this size, with an index")] = 5000,
    db: DbOpt = None,
    state_dir_opt: StateDirOpt = None,
    json_out: JsonOpt = False,
) -> None:
    """Export a job's trained weights (newest committed checkpoint, or --step) for other tools."""
    if format_ not in FORMATS:
        fail(f"--format: unknown format {format_!r}; choose one of {', '.join(FORMATS)}", EXIT_USAGE)
    if dtype is not None and dtype not in DTYPE_NAMES:
        fail(f"--dtype: unknown dtype {dtype!r}; choose one of {', '.join(DTYPE_NAMES)}", EXIT_USAGE)
    output = output.expanduser().absolute()
    err = _output_error(output)
    if err:
        fail(err, EXIT_USAGE)
    catalog = open_catalog(state_dir_opt, db, must_exist=True)
    try:
        row = catalog.get_job(job)
        recorded = [c.path for c in catalog.checkpoints(job)]
    except CatalogError as e:
        fail(str(e))
    if row is None:
        fail(f"no job named {job!r} in the catalog", EXIT_USAGE)
    try:
        spec = JobSpec.model_validate(row.spec)
    except ValidationError as e:
        fail(f"job {job!r}: its recorded job file no longer validates: {e.errors()[0]['msg']}")
    folders = checkpoint_folders(spec, Path(row.run_dir), recorded)
    ckpt = _pick_checkpoint(job, folders, step)
    dtype_name = dtype or spec.training.dtype
    summary = _write(ckpt.path, spec, output, dtype_name, max_shard_mb * 1024 * 1024)
    summary = {"job": job, "step": ckpt.step, "checkpoint": str(ckpt.path), **summary}
    if json_out:
        print_json(summary)
    else:
        console.print(f"exported {job} step {ckpt.step} ({summary['parameters']:,} parameters, {dtype_name}) "
                      f"to {output}", highlight=False, soft_wrap=True)


def _pick_checkpoint(job: str, folders: list[Path], step: int | None) -> CheckpointInfo:
    from trainer.checkpoint import committed_checkpoints

    committed = next((c for c in (committed_checkpoints(f) for f in folders) if c), [])
    if not committed:
        fail(f"job {job!r} has no committed checkpoint (looked in {', '.join(map(str, folders))})", EXIT_USAGE)
    if step is None:
        return committed[-1]
    match = [c for c in committed if c.step == step]
    if not match:
        steps = ", ".join(str(c.step) for c in committed)
        fail(f"--step {step}: job {job!r} has no committed checkpoint at that step (committed: {steps})",
             EXIT_USAGE)
    return match[0]


def _first_line(e: BaseException) -> str:
    text = str(e).strip()
    return text.splitlines()[0] if text else type(e).__name__


def _write(ckpt_path: Path, spec: JobSpec, output: Path, dtype_name: str, max_shard_bytes: int) -> dict[str, Any]:
    from safetensors import SafetensorError
    from torch.distributed.checkpoint.api import CheckpointException

    from trainer.consolidate import CheckpointMismatchError, read_model_state
    from trainer.hf import DTYPES, write_hf_folder

    args = spec.model.model_args()
    try:
        state = read_model_state(ckpt_path, args)
    except CheckpointMismatchError as e:
        fail(str(e))
    except (Exception, CheckpointException) as e:  # a damaged checkpoint: one line, not a traceback
        fail(f"checkpoint {ckpt_path} cannot be read: {_first_line(e)}")
    tmp: Path | None = None
    try:
        output.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{output.name}.partial-", dir=output.parent))
        files = write_hf_folder(tmp, state, args, dtype=DTYPES[dtype_name], max_shard_bytes=max_shard_bytes)
        _usual_modes(tmp)
        _publish(tmp, output)
    except (OSError, SafetensorError) as e:  # e.g. a full disk
        fail(f"cannot write {output}: {getattr(e, 'strerror', None) or _first_line(e)}")
    finally:
        if tmp is not None and tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return {"output": str(output), "files": files, "dtype": dtype_name,
            "parameters": sum(t.numel() for t in state.values())}
