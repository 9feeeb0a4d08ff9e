"""The simulation against its anchors: Llama 3's Table 5 counts and the analytic E[ETTR] of Kokolis et al.

The references are the published numbers (anchors/llama3-reliability.md), not
the simulation's own parameters: 419 unexpected interruptions in 54 days on
16,384 GPUs, with Table 5's mix.
"""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from orchestrator.sim.run import simulate
from orchestrator.sim.scenario import load_scenario

EXAMPLES = Path(__file__).resolve().parents[2] / "examples" / "sim"

TABLE5 = {
    "faulty_gpu": 148, "gpu_hbm3_memory": 72, "software_bug": 54, "network_switch_cable": 35,
    "host_maintenance": 32, "gpu_sram_memory": 19, "gpu_system_processor": 17, "nic": 7,
    "nccl_watchdog_timeout": 7, "silent_data_corruption": 6, "gpu_thermal_interface_sensor": 6, "ssd": 3,
    "power_supply": 3, "server_chassis": 2, "io_expansion_board": 2, "dependency": 2, "cpu": 2, "system_memory": 2,
}
CHI2_17_DOF_P001 = 40.79
"""Upper 0.1% point of the chi-square distribution with 17 degrees of freedom (statistical tables)."""


@pytest.fixture(scope="module")
def llama3_runs() -> list[dict]:
    sc = load_scenario(EXAMPLES / "llama3-405b.yaml")
    return [simulate(sc, seed) for seed in range(10)]


@pytest.mark.slow
def test_ten_seeds_mean_count_is_llama3s_419_within_10_percent(llama3_runs: list[dict]) -> None:
    assert sum(TABLE5.values()) == 419
    mean = sum(r["unexpected_interruptions"] for r in llama3_runs) / len(llama3_runs)
    assert 419 * 0.9 <= mean <= 419 * 1.1, mean
    planned = sum(r["planned_interruptions"] for r in llama3_runs) / len(llama3_runs)
    assert 47 * 0.8 <= planned <= 47 * 1.2, planned


@pytest.mark.slow
def test_recorded_category_shares_match_table5(llama3_runs: list[dict]) -> None:
    """Pooled over the seeds, the catalog's categories (what the classifier recorded) fit Table 5's shares."""
    got: dict[str, int] = {}
    for r in llama3_runs:
        for row in r["table5"]["categories"]:
            got[row["category"]] = got.get(row["category"], 0) + row["count"]
    assert set(got) <= set(TABLE5), f"categories Table 5 never saw: {set(got) - set(TABLE5)}"
    n = sum(got.values())
    chi2 = 0.0
    for c, ref in TABLE5.items():
        expected = n * ref / 419
        observed = got.get(c, 0)
        chi2 += (observed - expected) ** 2 / expected
        # Each category on its own: within 4 Poisson standard deviations.
        assert abs(observed - expected) <= 4 * math.sqrt(expected) + 1, (c, observed, expected)
    assert chi2 < CHI2_17_DOF_P001, chi2


@pytest.mark.slow
def test_simulated_ettr_agrees_with_the_analytic_formula_where_it_holds() -> None:
    """Poisson arrivals, one fixed restart cost, spares enough, no planned stops: within 1 percentage point."""
    sc = load_scenario(EXAMPLES / "analytic-check.yaml")
    runs = [simulate(sc, seed) for seed in range(2)]
    analytic = runs[0]["ettr_analytic"]
    n, r, u0, dt, w = 2048, 419 / (54 * 2048), 300 / 86_400, 600 / 86_400, 6 / 86_400
    assert analytic == pytest.approx((1 - n * r * (u0 + dt / 2)) / (1 + w / dt), abs=1e-9)
    mean = sum(x["ettr"] for x in runs) / len(runs)
    assert abs(mean - analytic) <= 0.01, (mean, analytic)
    assert all(x["time_lost_seconds"]["queueing"] == 0 and x["manual_interventions"] == 0 for x in runs)


@pytest.mark.slow
def test_ettr_and_formula_part_where_restart_costs_differ() -> None:
    """Sanity of the comparison: a slower restart lowers both, by about N*r*extra."""
    sc = load_scenario(EXAMPLES / "analytic-check.yaml")
    sc = sc.model_copy(update={"job": sc.job.model_copy(update={"days": 14})})
    slow = sc.model_copy(update={"recovery": sc.recovery.model_copy(update={"restart_seconds": 870})})
    a, b = simulate(sc, 11), simulate(slow, 11)
    drop = 419 / 54 * 600 / 86_400
    assert b["ettr_analytic"] == pytest.approx(a["ettr_analytic"] - drop / (1 + 6 / 600), abs=1e-9)
    assert a["ettr"] - b["ettr"] == pytest.approx(drop, abs=0.015)
