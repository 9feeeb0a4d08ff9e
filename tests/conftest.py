"""Shared fixtures: small job files, a temporary state folder, a tiny data set."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent


def small_job(name: str = "tiny", *, steps: int = 12, dp: int = 2, tp: int = 1, pp: int = 1, cp: int = 1,
              interval: int = 4, data: str | None = None, **overrides: dict) -> dict:
    job = {
        "name": name,
        "model": {"dim": 32, "n_layers": 2, "n_heads": 4, "n_kv_heads": 2, "max_seq_len": 64},
        "parallelism": {"dp": dp, "tp": tp, "pp": pp, "cp": cp},
        "training": {"steps": steps, "seed": 7, "global_batch_size": 4 * dp, "micro_batch_size": 2,
                     "seq_len": 32, "lr": {"peak": 0.01, "min_lr": 0.001, "warmup_steps": 2}},
        "data": {"paths": [data or "{stdlib}/json/*.py"], "max_bytes": 200_000},
        "checkpoint": {"interval_steps": interval, "async": True, "keep_last": 3},
        # The preflight's all-reduce imports torch into every rank supervisor (about 20 s a gang here):
        # its own tests turn it on.
        "reliability": {"hang_timeout_s": 30, "max_restarts": 3, "preflight_collective": False},
        "resources": {"cpus_per_rank": 1},
    }
    for section, values in overrides.items():
        if isinstance(values, dict) and isinstance(job.get(section), dict):
            job[section].update(values)
        else:
            job[section] = values
    return job


def write_job(path: Path, job: dict) -> Path:
    path.write_text(yaml.safe_dump(job, sort_keys=False))
    return path


@pytest.fixture
def state_dir(tmp_path: Path) -> Path:
    d = tmp_path / "state"
    return d


@pytest.fixture
def cli_env(state_dir: Path) -> dict[str, str]:
    env = dict(os.environ)
    env["ORCHESTRATOR_HOME"] = str(state_dir)
    env["PATH"] = f"{BIN}:{env.get('PATH', '')}"
    env.pop("RAY_ADDRESS", None)
    return env


@pytest.fixture(scope="session")
def postgres_admin_url():
    from tests.services import postgres_server

    with postgres_server() as url:
        yield url


_db_counter = [0]


@pytest.fixture(params=["sqlite", "postgresql"])
def catalog_url(request, tmp_path: Path) -> str:
    """A fresh, empty catalog database on each backend."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'catalog.db'}"
    from tests.services import create_database

    admin = request.getfixturevalue("postgres_admin_url")
    _db_counter[0] += 1
    return create_database(admin, f"catalog_{os.getpid()}_{_db_counter[0]}")


_LAYER_ORDER = {"integration": 0, "e2e": 1, "unit": 2}
_E2E_LAST = ("test_netns_hosts.py", "test_bad_gpu.py", "test_recovery.py")
"""E2e modules whose detectors time faults in seconds (hangs, slow links, SDC replays), run last: `make test`
runs the unit and integration tests beside the other e2e jobs, and these once both are done, alone (the
list in scripts/run-tests.sh)."""


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Integration tests first, then e2e (the timing-sensitive modules last), then unit: the cheaper layer fails
    first. `make test` runs unit and integration in one pytest process beside the e2e jobs (scripts/run-tests.sh)."""
    def key(item: pytest.Item) -> tuple[int, int]:
        parts = Path(str(item.fspath)).relative_to(REPO).parts
        layer = parts[1] if len(parts) > 2 and parts[0] == "tests" else "unit"
        late = _E2E_LAST.index(parts[-1]) + 1 if layer == "e2e" and parts[-1] in _E2E_LAST else 0
        return _LAYER_ORDER.get(layer, 2), late

    items.sort(key=key)
