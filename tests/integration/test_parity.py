"""Every parallel dimension alone, the pairs with a schedule of their own, and all four at once match one process.

The pairs dp·tp and tp·cp are not run on their own: the four-dimensional layout holds both (and every
other pair) at once, and a wrong reduction in either moves its loss by 1e-2 or more (see below).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from trainer.parity import base_config, compare, run_layout, short_documents

pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]
STEPS = 4
# Fixed here from measured figures, not taken from the code under test: over every layout below the
# largest differences from one process were 2.1e-4 (loss) and 1.4e-4 (parameters) after 4 steps in
# float32 (summation order differs across ranks). A wrong gradient, a missing reduction or a
# misrouted shard moves them by 1e-2 or more.
LOSS_TOL = 5e-4
PARAM_TOL = 5e-4

LAYOUTS = {
    "dp2": {"dp": 2},
    "tp2": {"tp": 2},
    "cp2": {"cp": 2},
    "pp2-1f1b": {"pp": 2, "schedule": "1f1b"},
    "dp2-pp2-gpipe": {"dp": 2, "pp": 2, "schedule": "gpipe"},
    "cp2-pp2-interleaved": {"cp": 2, "pp": 2, "schedule": "interleaved_1f1b", "stages_per_rank": 2},
    "dp2-tp2-cp2-pp2": {"dp": 2, "tp": 2, "cp": 2, "pp": 2, "schedule": "1f1b"},
}


@pytest.fixture(scope="module")
def workdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("parity")


@pytest.fixture(scope="module")
def reference(workdir: Path):
    return run_layout(base_config(short_documents(workdir / "data"), STEPS), workdir / "reference")


@pytest.mark.parametrize("name", list(LAYOUTS))
def test_layout_matches_single_process(name: str, workdir: Path, reference) -> None:
    report = compare(LAYOUTS[name], STEPS, workdir, reference)
    assert report["max_loss_diff"] <= LOSS_TOL, report
    assert report["max_param_diff"] <= PARAM_TOL, report
    # The loss went down: the layout trained, it did not just reproduce the init.
    assert report["losses"][-1] < report["losses"][0]
