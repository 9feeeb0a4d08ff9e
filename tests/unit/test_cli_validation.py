"""Bad input to `submit`: one line, exit 2, nothing started or written."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import small_job, write_job

PROBE = (
    "import sys\n"
    "from orchestrator.cli.main import app\n"
    "try:\n"
    "    app(sys.argv[1:])\n"
    "except SystemExit as e:\n"
    "    assert 'ray' not in sys.modules, 'Ray was imported'\n"
    "    raise\n"
)


def _submit(args: list[str], env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-c", PROBE, "submit", *args], capture_output=True, text=True,
                          env=env, timeout=60)


def _bad_jobs(tmp_path: Path) -> dict[str, Path]:
    unknown = small_job()
    unknown["checkpoint"]["interval"] = 3
    wrong_type = small_job()
    wrong_type["training"]["steps"] = "many"
    too_big = small_job(dp=8, resources={"nodes": 2, "ranks_per_node": 2})
    gpus = small_job(resources={"gpus_per_rank": 1})
    return {
        "unknown key": write_job(tmp_path / "unknown.yaml", unknown),
        "wrong type": write_job(tmp_path / "type.yaml", wrong_type),
        "missing file": tmp_path / "absent.yaml",
        "does not fit": write_job(tmp_path / "big.yaml", too_big),
        "no gpus here": write_job(tmp_path / "gpus.yaml", gpus),
    }


@pytest.mark.parametrize("case", ["unknown key", "wrong type", "missing file", "does not fit", "no gpus here"])
def test_bad_job_file(case: str, tmp_path: Path, cli_env: dict[str, str], state_dir: Path) -> None:
    path = _bad_jobs(tmp_path)[case]
    if case == "no gpus here":
        import torch

        if torch.cuda.is_available():
            pytest.skip("this machine has a GPU")
    r = _submit([str(path)], cli_env)
    assert r.returncode == 2, r.stderr
    lines = [ln for ln in r.stderr.strip().splitlines() if ln.strip()]
    assert len(lines) == 1, r.stderr
    assert "Traceback" not in r.stderr
    if case != "no gpus here":
        assert str(path) in lines[0]
    assert not state_dir.exists(), "the state folder was created"


def test_no_follow_needs_a_cluster(tmp_path: Path, cli_env: dict[str, str], state_dir: Path) -> None:
    path = write_job(tmp_path / "ok.yaml", small_job())
    r = _submit([str(path), "--no-follow"], cli_env)
    assert r.returncode == 2 and "--no-follow" in r.stderr
    assert not state_dir.exists()


def test_status_of_unknown_job(cli_env: dict[str, str], state_dir: Path) -> None:
    r = subprocess.run([sys.executable, "-m", "orchestrator.cli.main", "status", "nope"], capture_output=True,
                       text=True, env=cli_env, timeout=60)
    assert r.returncode == 2 and "no catalog" in r.stderr


def test_unreachable_database(tmp_path: Path, cli_env: dict[str, str]) -> None:
    r = subprocess.run([sys.executable, "-m", "orchestrator.cli.main", "jobs", "--db",
                        "postgresql://u:p@127.0.0.1:1/x"], capture_output=True, text=True, env=cli_env,
                       timeout=60)
    assert r.returncode == 1
    assert "cannot reach database" in r.stderr and "p@" not in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1


def test_validate_checks_without_starting_or_writing(tmp_path: Path, cli_env: dict[str, str],
                                                     state_dir: Path) -> None:
    good = write_job(tmp_path / "ok.yaml", small_job(dp=2, tp=2))
    r = subprocess.run([sys.executable, "-c", PROBE, "validate", str(good)], capture_output=True, text=True,
                       env=cli_env, timeout=60)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip().splitlines() == [f"{good}: valid: job tiny, 4 ranks (dp 2 x tp 2 x pp 1 x cp 1), 12 steps"]
    assert not state_dir.exists(), "validate created the state folder"


def test_chaos_stall_rejects_an_unknown_point(cli_env: dict[str, str], state_dir: Path) -> None:
    r = subprocess.run([sys.executable, "-c", PROBE, "chaos", "stall", "j", "--rank", "1", "--where", "lunch"],
                       capture_output=True, text=True, env=cli_env, timeout=60)
    assert r.returncode == 2 and "--where" in r.stderr and "p2p" in r.stderr
    assert len([ln for ln in r.stderr.strip().splitlines() if ln.strip()]) == 1, r.stderr
    assert not state_dir.exists()
