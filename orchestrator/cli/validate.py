"""`orchestrator validate`: check a job file without starting or writing anything."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from orchestrator.cli.common import EXIT_USAGE, JsonOpt, console, fail, print_json
from orchestrator.spec import JobFileError, load_job_file


def validate(job_file: Annotated[Path, typer.Argument(help="Job file (YAML)")], json_out: JsonOpt = False) -> None:
    """Check a job file (keys, types, layout against model and resources, data files) and exit."""
    try:
        spec = load_job_file(job_file)
    except JobFileError as e:
        fail(str(e), EXIT_USAGE)
    p = spec.parallelism
    layout = f"dp {p.dp} x tp {p.tp} x pp {p.pp} x cp {p.cp}"
    if json_out:
        print_json({"file": str(job_file), "valid": True, "job": spec.name, "world_size": spec.world_size,
                    "parallelism": {"dp": p.dp, "tp": p.tp, "pp": p.pp, "cp": p.cp},
                    "steps": spec.training.steps})
        return
    console.print(f"{job_file}: valid: job {spec.name}, {spec.world_size} ranks ({layout}), "
                  f"{spec.training.steps} steps", highlight=False, soft_wrap=True, markup=False)
