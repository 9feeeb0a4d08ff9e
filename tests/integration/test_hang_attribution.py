"""Real stalls on real gloo ranks (no Ray): the hang detector names the stalled, live rank.

One set of rank processes per layout serves several cells: each victim is
stalled through its control file at a point of its step (its process and
beacon thread stay alive), the detector the controller runs fires, and the
stall is released before the next cell. The full matrix is bench/hang_matrix.py.
"""

from __future__ import annotations

import sysconfig
from pathlib import Path

import pytest

from health.drill import Cell, run_cells

pytestmark = [pytest.mark.slow, pytest.mark.timeout(400)]
DATA = f"{sysconfig.get_paths()['stdlib']}/json/*.py"
POLL_SLACK_S = 1.5
"""Detection may trail the hang limit by the beacon interval (1 s) plus a poll."""


def test_stalled_rank_is_named_in_tp2_pp2(tmp_path: Path) -> None:
    """One spawn, three cells: a TP peer, a pipeline sender, a rank late for the step's global all-reduce.

    Every other layout, position and victim runs in bench/hang_matrix.py (results in BENCHMARKS.md), and
    its recorded beacons are golden files in tests/unit/test_attribution.py.
    """
    cells = [Cell(3, "forward"), Cell(1, "p2p"), Cell(2, "collective")]
    results = run_cells({"tp": 2, "pp": 2}, cells, tmp_path, data_glob=DATA)
    assert len(results) == len(cells)
    for r in results:
        assert not r.error, (r.victim, r.where, r.error)
        assert r.named == [r.victim] and r.certain, (r.victim, r.where, r.summary)
        assert r.waiting_in is not None and " wait in " in r.summary
        if r.where == "collective":
            assert r.waiting_in["kind"] == "collective" and "all_reduce" in r.waiting_in["op"]
        assert r.detection_s is not None and r.limit_s is not None
        assert 0 < r.detection_s <= r.limit_s + POLL_SLACK_S, (r.detection_s, r.limit_s)
