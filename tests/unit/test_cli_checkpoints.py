"""`submit` and the checkpoints on disk, up to the point where Ray would start: resubmission and --fresh."""

from __future__ import annotations

import json
import subprocess
from dataclasses import dataclass
from pathlib import Path

import pytest
from typer.testing import CliRunner

from orchestrator.catalog.repository import Catalog
from orchestrator.cli.main import app
from tests.conftest import small_job, write_job
from tests.disk import small_tmpfs


@dataclass
class _Run:
    returncode: int
    stdout: str
    stderr: str


def _submit(args: list[str], env: dict[str, str]) -> _Run:
    """In process (the CLI is imported once): these paths end before Ray would start."""
    r = CliRunner().invoke(app, ["submit", *args], env=env)
    assert r.exception is None or isinstance(r.exception, SystemExit), r.exception
    return _Run(r.exit_code, r.stdout, r.stderr)


def _succeeded(state_dir: Path, name: str, steps: int) -> Catalog:
    state_dir.mkdir(parents=True, exist_ok=True)
    cat = Catalog(f"sqlite:///{state_dir / 'catalog.db'}")
    cat.create_job(name, {}, 2, steps, str(state_dir / "runs" / name), None)
    cat.update_job(name, state="succeeded", last_step=steps)
    return cat


def _commit(folder: Path, step: int) -> Path:
    d = folder / f"step-{step:08d}"
    d.mkdir(parents=True)
    (d / "__0_0.distcp").write_bytes(b"x" * 64)
    (d / "COMMITTED").write_text(json.dumps({"step": step}))
    return d


def _lines(text: str) -> list[str]:
    return [ln for ln in text.strip().splitlines() if ln.strip()]


def test_resubmitting_a_succeeded_job_with_the_same_steps_does_nothing(
        tmp_path: Path, cli_env: dict[str, str], state_dir: Path) -> None:
    _succeeded(state_dir, "tiny", 12)
    r = _submit([str(write_job(tmp_path / "job.yaml", small_job(steps=12)))], cli_env)
    assert r.returncode == 0 and "already succeeded" in r.stdout and "training.steps" in r.stdout, r.stderr


def test_more_steps_without_a_committed_checkpoint_never_start_from_zero(
        tmp_path: Path, cli_env: dict[str, str], state_dir: Path) -> None:
    _succeeded(state_dir, "tiny", 12)
    r = _submit([str(write_job(tmp_path / "job.yaml", small_job(steps=20)))], cli_env)
    assert r.returncode == 1 and len(_lines(r.stderr)) == 1, r.stderr
    assert "no committed checkpoint" in r.stderr and "--fresh" in r.stderr


def test_checkpoints_left_in_the_shared_folder_itself_are_refused(
        tmp_path: Path, cli_env: dict[str, str], state_dir: Path) -> None:
    _commit(tmp_path / "shared", 4)
    job = small_job(checkpoint={"folder": str(tmp_path / "shared")})
    r = _submit([str(write_job(tmp_path / "job.yaml", job))], cli_env)
    assert r.returncode == 2 and len(_lines(r.stderr)) == 1, r.stderr
    assert str(tmp_path / "shared" / "tiny") in r.stderr
    assert (tmp_path / "shared" / "step-00000004" / "COMMITTED").is_file()


def test_fresh_that_cannot_delete_fails_with_one_line_and_keeps_the_history(
        tmp_path: Path, cli_env: dict[str, str], state_dir: Path) -> None:
    cat = _succeeded(state_dir, "tiny", 12)
    with small_tmpfs(tmp_path / "shared", "1m") as shared:
        _commit(shared / "tiny", 12)
        other = _commit(shared / "other", 8)
        subprocess.run(["mount", "-o", "remount,ro", str(shared)], check=True)
        job = small_job(steps=12, checkpoint={"folder": str(shared)})
        r = _submit([str(write_job(tmp_path / "job.yaml", job)), "--fresh"], cli_env)
        assert r.returncode == 1, r.stdout + r.stderr
        assert f"deleting job 'tiny': checkpoints {shared / 'tiny'} (1 committed)" in r.stdout
        assert len(_lines(r.stderr)) == 1 and "Read-only file system" in r.stderr, r.stderr
        assert (shared / "tiny" / "step-00000012" / "COMMITTED").is_file()
        assert (other / "COMMITTED").is_file()
    assert cat.require_job("tiny").state == "succeeded", "the catalog history must stay when --fresh fails"


@pytest.fixture(autouse=True)
def _no_ray_address(cli_env: dict[str, str]) -> None:
    cli_env.pop("RAY_ADDRESS", None)
