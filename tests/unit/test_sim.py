"""The simulation's plumbing: scenario validation, the evidence it synthesizes, a run recorded in a catalog.

The statistical checks against Llama 3's Table 5 and the analytic E[ETTR] are in
test_sim_statistics.py.
"""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from orchestrator.classifier import classify
from orchestrator.cli.main import app
from orchestrator.sim.evidence import SURFACES, TEMPLATES, evidence_text
from orchestrator.sim.scenario import ScenarioError, load_scenario
from orchestrator.taxonomy import CATEGORIES

EXAMPLES = Path(__file__).resolve().parents[2] / "examples" / "sim"
runner = CliRunner()


def small(**over: object) -> dict:
    """A 64-host, 3-day scenario with failures frequent enough to see every path."""
    raw = yaml.safe_load((EXAMPLES / "llama3-405b.yaml").read_text())
    raw.pop("sweep")
    raw["name"] = "small"
    raw["cluster"].update(hosts=64, spares=4, repair_hours=12)
    raw["job"].update(days=3, global_batch=64, step_seconds=60)
    raw["failures"]["rate_scale"] = 30.0
    for k, v in over.items():
        section, key = k.split("__")
        raw[section][key] = v
    return raw


def write(tmp: Path, raw: dict) -> Path:
    p = tmp / "scenario.yaml"
    p.write_text(yaml.safe_dump(raw))
    return p


@pytest.mark.parametrize("category", sorted(TEMPLATES))
def test_each_templates_evidence_is_classified_as_its_category(category: str) -> None:
    rng = random.Random(category)
    for _ in range(5):
        host = f"node-{rng.randrange(2048):05d}"
        text = evidence_text(category, rng, host, rng.randrange(16384), rng.randrange(8), rng.randrange(10**6))
        kind = "bad_gpu" if SURFACES[category] == "sdc" else SURFACES[category]
        assert classify(text, kind=kind).category == category, text


def test_templates_cover_table5() -> None:
    assert set(TEMPLATES) == set(SURFACES) == set(CATEGORIES) - {"unknown"}


@pytest.mark.parametrize("mutate, field", [
    (lambda r: r["cluster"].update(hostz=3), "cluster.hostz: unknown key"),
    (lambda r: r["failures"]["counts"].update(gpu_on_fire=3), "failures.counts: unknown category 'gpu_on_fire'"),
    (lambda r: r["job"].update(tp=3), "job: tp*pp*cp=48 does not divide"),
    (lambda r: r["recovery"]["detection_seconds"].update(psychic=1), "unknown detection kind 'psychic'"),
    (lambda r: r["checkpoint"].update(interval_minutes=0), "checkpoint.interval_minutes"),
])
def test_bad_scenario_is_one_line_and_exit_2(tmp_path: Path, mutate, field: str) -> None:
    raw = small()
    mutate(raw)
    p = write(tmp_path, raw)
    with pytest.raises(ScenarioError, match=field.replace("*", r"\*")):
        load_scenario(p)
    r = runner.invoke(app, ["sim", str(p), "--state-dir", str(tmp_path / "state")])
    assert r.exit_code == 2
    assert len(r.output.strip().splitlines()) == 1 and field in r.output
    assert not (tmp_path / "state").exists(), "nothing is written for a bad scenario"


def test_missing_and_malformed_files(tmp_path: Path) -> None:
    r = runner.invoke(app, ["sim", str(tmp_path / "nope.yaml")])
    assert r.exit_code == 2 and "no such file" in r.output
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: [unclosed\n")
    r = runner.invoke(app, ["sim", str(bad)])
    assert r.exit_code == 2 and "not valid YAML" in r.output


def test_run_recorded_in_catalog_reads_back_through_report(tmp_path: Path) -> None:
    """A simulated run's catalog and metrics give `orchestrator report` the simulation's own figures."""
    p = write(tmp_path, small())
    state = tmp_path / "state"
    r = runner.invoke(app, ["sim", str(p), "--seed", "7", "--state-dir", str(state), "--json"])
    assert r.exit_code == 0, r.output
    sim = json.loads(r.output)
    assert sim["unexpected_interruptions"] > 10 and sim["planned_interruptions"] > 0
    assert set(sim["time_lost_seconds"]) >= {"detection", "restart", "lost_work", "checkpoint_stall", "queueing"}
    wall = sim["wall_seconds"]
    assert sim["productive_seconds"] + sum(sim["time_lost_seconds"].values()) == pytest.approx(wall, rel=1e-6)
    rep = runner.invoke(app, ["report", "--state-dir", str(state), "--json"])
    assert rep.exit_code == 0, rep.output
    job = json.loads(rep.output)["per_job"][0]
    assert job["job"] == "sim-small-s7" and job["state"] == "succeeded"
    assert job["wall_seconds"] == pytest.approx(wall, rel=1e-3)
    assert job["ettr"] == pytest.approx(sim["ettr"], abs=0.01)
    t5 = job["table5"]
    assert t5["unexpected_interruptions"] == sim["unexpected_interruptions"]
    assert t5["planned_interruptions"] == sim["planned_interruptions"]
    assert {c["category"]: c["count"] for c in t5["categories"]} == \
        {c["category"]: c["count"] for c in sim["table5"]["categories"]}
    hosts = runner.invoke(app, ["hosts", "list", "--state-dir", str(state), "--json"])
    assert hosts.exit_code == 0 and "cordoned" in hosts.output


def test_same_seed_same_run_and_seeds_differ(tmp_path: Path) -> None:
    p = write(tmp_path, small())
    a, b, c = (json.loads(runner.invoke(app, ["sim", str(p), "--seed", s, "--json"]).output) for s in "112")
    for k in ("unexpected_interruptions", "ettr", "time_lost_seconds"):
        assert a[k] == b[k]
    assert (a["unexpected_interruptions"], a["ettr"]) != (c["unexpected_interruptions"], c["ettr"])


def test_no_spares_and_no_shrink_means_queueing_for_repairs(tmp_path: Path) -> None:
    p = write(tmp_path, small(cluster__spares=0, job__allow_shrink_dp=False, cluster__repair_hours=6))
    o = json.loads(runner.invoke(app, ["sim", str(p), "--json"]).output)
    assert o["time_lost_seconds"]["queueing"] > 0
    assert o["min_dp"] == 4  # 64 hosts x 8 GPUs / (tp 8 x pp 16): never shrunk


def test_no_spares_with_shrink_shrinks_then_grows(tmp_path: Path) -> None:
    p = write(tmp_path, small(cluster__spares=0, cluster__repair_hours=6))
    o = json.loads(runner.invoke(app, ["sim", str(p), "--json"]).output)
    assert o["min_dp"] < 4 and o["scaling"].get("shrink", 0) > 0 and o["scaling"].get("grow", 0) > 0
    assert o["time_lost_seconds"]["queueing"] == 0


def test_in_memory_snapshots_cut_lost_work(tmp_path: Path) -> None:
    off = json.loads(runner.invoke(app, ["sim", str(write(tmp_path, small(job__step_seconds=6))), "--json"]).output)
    on = json.loads(runner.invoke(app, ["sim", str(write(tmp_path, small(job__step_seconds=6,
                                                                         checkpoint__in_memory_interval_steps=1))),
                                        "--json"]).output)
    assert on["time_lost_seconds"]["lost_work"] < 0.3 * off["time_lost_seconds"]["lost_work"]
    assert on["ettr"] > off["ettr"]


def test_sweep_writes_html_with_plots(tmp_path: Path) -> None:
    raw = small()
    raw["sweep"] = {"checkpoint_interval_minutes": [2, 20], "restart_seconds": [30, 600],
                    "in_memory_interval_steps": [0, 10], "days": 1, "target_ettr": 0.9}
    html = tmp_path / "sweep.html"
    r = runner.invoke(app, ["sim", str(write(tmp_path, raw)), "--sweep", "--html", str(html), "--json"])
    assert r.exit_code == 0, r.output
    res = json.loads(r.output)
    assert len(res["grid"]) == 8 and len(res["curves"]["restart_seconds"]) == 2
    best = max(res["grid"], key=lambda g: g["ettr"])["settings"]
    assert best["restart_seconds"] == 30
    assert all(g["ettr"] >= 0.9 for g in res["reaching_target"])
    assert html.read_text().count("data:image/png;base64,") == 2
