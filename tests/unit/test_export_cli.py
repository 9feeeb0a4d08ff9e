"""`orchestrator export`: the newest (or a chosen) committed checkpoint as a Hugging Face folder;
bad input is one line and exit 2, and a failed export leaves no folder behind."""

from __future__ import annotations

import json
import resource
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from orchestrator.catalog.db import sqlite_url
from orchestrator.catalog.repository import Catalog
from orchestrator.cli.main import app
from orchestrator.spec import JobSpec
from tests.conftest import small_job
from trainer.checkpoint import COMMIT_MARKER, Checkpointer, committed_checkpoints
from trainer.hf import CONFIG_FILE, WEIGHTS_FILE, load_hf_into
from trainer.model import Transformer

JOB = "tiny"


def _train_state(model: Transformer, step: int) -> torch.optim.Optimizer:
    """Make the weights depend on the step, so checkpoints of different steps differ."""
    opt = torch.optim.AdamW(model.parameters(), lr=0.01)
    for _ in range(step):
        x = torch.randint(0, 257, (1, 8))
        model(x, torch.zeros_like(x), torch.arange(8)).sum().backward()
        opt.step()
        opt.zero_grad()
    return opt


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """Real checkpoints of the small job at steps 2 and 4, plus an uncommitted step 6."""
    folder = tmp_path_factory.mktemp("template") / "checkpoints"
    spec = JobSpec.model_validate(small_job(JOB))
    ckpt = Checkpointer(folder, keep_last=5, async_save=False, rank=0)
    weights = {}
    for step in (2, 4, 6):
        model = Transformer(spec.model.model_args())
        model.init_weights(spec.training.seed)
        opt = _train_state(model, step)
        ckpt.save(step, model, opt, {"step": step, "sample": 0}, {})
        weights[step] = {k: v.clone() for k, v in model.state_dict().items()}
    six = next(c for c in committed_checkpoints(folder) if c.step == 6)
    (six.path / COMMIT_MARKER).unlink()
    return {"folder": folder, "spec": spec, "weights": weights}


@pytest.fixture
def job_with_checkpoints(tmp_path: Path, checkpoints: dict) -> dict:
    """A state folder whose catalog holds the job, with its own copy of the checkpoints."""
    state = tmp_path / "state"
    spec = checkpoints["spec"]
    run_dir = state / "runs" / JOB
    shutil.copytree(checkpoints["folder"], run_dir / "checkpoints")
    cat = Catalog(sqlite_url(state / "catalog.db"))
    cat.create_job(JOB, spec.model_dump(mode="json", by_alias=True), spec.world_size, spec.training.steps,
                   str(run_dir), None)
    cat.close()
    return {"state": state, "weights": checkpoints["weights"], "spec": spec, "ckpt_dir": run_dir / "checkpoints"}


def _export(env: dict, *args: str) -> tuple[int, str, str]:
    r = CliRunner().invoke(app, ["export", JOB, "--state-dir", str(env["state"]), *args])
    return r.exit_code, r.stdout, r.stderr


def _loaded(folder: Path, spec: JobSpec) -> dict[str, torch.Tensor]:
    m = Transformer(spec.model.model_args())
    load_hf_into(m, folder)
    return m.state_dict()


def test_newest_committed_checkpoint_by_default(job_with_checkpoints: dict, tmp_path: Path) -> None:
    out = tmp_path / "exports" / "model"
    code, stdout, stderr = _export(job_with_checkpoints, "--output", str(out), "--json")
    assert code == 0, stderr
    assert json.loads(stdout)["step"] == 4
    assert {p.name for p in out.iterdir()} == {CONFIG_FILE, WEIGHTS_FILE, "generation_config.json"}
    assert [p.name for p in out.parent.iterdir()] == ["model"], "the temporary folder must be gone"
    modes = {(out / f).stat().st_mode & 0o777 for f in (WEIGHTS_FILE, CONFIG_FILE)}
    assert len(modes) == 1, "the weights must get the same permissions as any other file written"
    got, want = _loaded(out, job_with_checkpoints["spec"]), job_with_checkpoints["weights"][4]
    assert all(torch.equal(got[k], want[k]) for k in want)


def test_chosen_step_dtype_and_empty_output_folder(job_with_checkpoints: dict, tmp_path: Path) -> None:
    out = tmp_path / "empty"
    out.mkdir()
    code, _, stderr = _export(job_with_checkpoints, "--output", str(out), "--step", "2", "--dtype", "bfloat16")
    assert code == 0, stderr
    assert json.loads((out / CONFIG_FILE).read_text())["torch_dtype"] == "bfloat16"
    got, want = _loaded(out, job_with_checkpoints["spec"]), job_with_checkpoints["weights"][2]
    for k in want:
        assert torch.equal(got[k], want[k].to(torch.bfloat16).float()), k


@pytest.mark.parametrize("case", ["no job", "uncommitted step", "absent step", "output not empty",
                                  "output is a file", "bad dtype", "bad format", "no checkpoint"])
def test_bad_input_is_one_line_and_exit_2(case: str, job_with_checkpoints: dict, tmp_path: Path) -> None:
    out = tmp_path / "out"
    args = ["--output", str(out)]
    if case == "no job":
        r = CliRunner().invoke(app, ["export", "nope", "--state-dir", str(job_with_checkpoints["state"]), *args])
        code, stderr = r.exit_code, r.stderr
    else:
        if case == "uncommitted step":
            args += ["--step", "6"]
        elif case == "absent step":
            args += ["--step", "3"]
        elif case == "output not empty":
            out.mkdir()
            (out / "keep.txt").write_text("mine")
        elif case == "output is a file":
            out.write_text("mine")
        elif case == "bad dtype":
            args += ["--dtype", "int8"]
        elif case == "bad format":
            args += ["--format", "gguf"]
        elif case == "no checkpoint":
            for c in committed_checkpoints(job_with_checkpoints["ckpt_dir"]):
                (c.path / COMMIT_MARKER).unlink()
        code, _, stderr = _export(job_with_checkpoints, *args)
    assert code == 2, stderr
    lines = [ln for ln in stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and "Traceback" not in stderr, stderr
    if case == "uncommitted step":
        assert "--step 6" in lines[0] and "committed: 2, 4" in lines[0]
    if case.startswith("output"):
        assert (out / "keep.txt").read_text() == "mine" if out.is_dir() else out.read_text() == "mine"
    else:
        assert not out.exists()
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".out")] == []


def test_damaged_checkpoint_is_one_line_and_writes_nothing(job_with_checkpoints: dict, tmp_path: Path) -> None:
    newest = committed_checkpoints(job_with_checkpoints["ckpt_dir"])[-1]
    for f in newest.path.glob("*.distcp"):
        f.write_bytes(b"garbage")
    code, _, stderr = _export(job_with_checkpoints, "--output", str(tmp_path / "out"))
    assert code == 1
    assert len(stderr.strip().splitlines()) == 1 and "cannot be read" in stderr, stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["state"]


def _limit_file_size() -> None:
    # A full disk, for this process only: writes past 48 KiB fail with EFBIG instead of killing it.
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    resource.setrlimit(resource.RLIMIT_FSIZE, (48 * 1024, 48 * 1024))


def test_write_failure_leaves_no_half_written_folder(job_with_checkpoints: dict, tmp_path: Path) -> None:
    out = tmp_path / "exports" / "model"
    out.parent.mkdir()
    cmd = [sys.executable, "-m", "orchestrator.cli.main", "export", JOB, "--output", str(out),
           "--state-dir", str(job_with_checkpoints["state"])]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=120, preexec_fn=_limit_file_size)
    assert r.returncode == 1, r.stderr
    assert len(r.stderr.strip().splitlines()) == 1 and f"cannot write {out}" in r.stderr, r.stderr
    assert list(out.parent.iterdir()) == []
