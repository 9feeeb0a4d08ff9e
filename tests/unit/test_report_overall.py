"""`report`'s overall Table-5 row counts the lost work of every job, priced at that job's step time."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

from typer.testing import CliRunner

from orchestrator.catalog.repository import Catalog
from orchestrator.cli.main import app


def _job(cat: Catalog, runs: Path, name: str, step_s: float, steps_lost: int, t0: datetime) -> None:
    rdir = runs / name
    rdir.mkdir(parents=True)
    rows = [{"step": s, "loss": 1.0, "tokens": 64, "step_seconds": step_s, "time": t0.timestamp() + s * step_s}
            for s in range(1, 11)]
    (rdir / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    cat.create_job(name, {"name": name}, world_size=2, steps_total=10, run_dir=str(rdir), ray_address=None)
    cat.update_job(name, state="succeeded", started_at=t0, ended_at=t0 + timedelta(minutes=5))
    # 10 s from fault to resume, plus the steps redone.
    cat.record_interruption(job_name=name, attempt=1, category="faulty_gpu", component="gpu", kind="crash",
                            fault_at=t0 + timedelta(seconds=20), detected_at=t0 + timedelta(seconds=21),
                            resumed_at=t0 + timedelta(seconds=30), steps_lost=steps_lost)


def test_overall_table5_keeps_lost_work(tmp_path: Path) -> None:
    state = tmp_path / "state"
    cat = Catalog(f"sqlite:///{state / 'catalog.db'}")
    t0 = datetime(2026, 1, 1, tzinfo=UTC)
    _job(cat, state / "runs", "fast", step_s=0.5, steps_lost=4, t0=t0)    # 10 + 4 x 0.5 = 12 s
    _job(cat, state / "runs", "slow", step_s=3.0, steps_lost=2, t0=t0)    # 10 + 2 x 3.0 = 16 s
    r = CliRunner().invoke(app, ["report", "--json"], env={"ORCHESTRATOR_HOME": str(state), "ORCHESTRATOR_DB": ""})
    assert r.exit_code == 0, r.output
    out = json.loads(r.stdout)
    per_job = {j["job"]: j["table5"]["categories"][0]["time_lost_seconds"] for j in out["per_job"]}
    assert per_job == {"fast": 12.0, "slow": 16.0}
    (row,) = out["overall"]["table5"]["categories"]
    assert (row["category"], row["count"], row["share"]) == ("faulty_gpu", 2, 1.0)
    assert row["time_lost_seconds"] == 28.0
    assert out["overall"]["table5"]["mtbf_seconds"] == out["overall"]["wall_seconds"] / 2
