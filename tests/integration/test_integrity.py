"""Real gloo ranks: the SDC check names a perturbed replica; a NaN batch is rolled back and skipped."""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from tests.dist import metrics, run_ranks, tiny_cfg

pytestmark = pytest.mark.timeout(600)
EXIT_SDC = 86  # the trainer's documented exit code for a replica named by the SDC check


def test_sdc_check_names_the_perturbed_replica(tmp_path: Path) -> None:
    cfg = tiny_cfg(steps=8, dp=2, interval=4, async_save=False, sdc_check_interval_steps=2,
                   collective_timeout_s=8)
    r = run_ranks(cfg, tmp_path, control={1: {"sdc": 1, "sdc_at_step": 4}})
    assert r.returncodes[1] == EXIT_SDC, Path(r.logs[1]).read_text()[-2000:]
    assert r.returncodes[0] == 0  # the healthy replica waits to be stopped, then leaves
    bad = Path(r.logs[1]).read_text()
    assert "silent data corruption detected at step 4: replica dp=1 (rank 1) disagrees" in bad
    assert "silent data corruption" not in Path(r.logs[0]).read_text()
    # The check at step 2 passed; step 4, whose check failed, is not recorded as a completed step.
    assert max(x["step"] for x in metrics(tmp_path)) == 3


def test_nan_batch_is_rolled_back_and_skipped(tmp_path: Path) -> None:
    # The SDC check runs too: healthy replicas agree on every check, rollback or not.
    cfg = tiny_cfg(steps=10, dp=2, interval=4, async_save=False, sdc_check_interval_steps=2)
    r = run_ranks(cfg, tmp_path, control={0: {"nan": 1, "nan_at_step": 7}})
    assert r.returncodes == [0, 0], Path(r.logs[0]).read_text()[-2000:]
    rows = metrics(tmp_path)
    assert all(math.isfinite(x["loss"]) for x in rows)
    assert [x["step"] for x in rows] == [1, 2, 3, 4, 5, 6, 5, 6, 7, 8, 9, 10]
    first5, again5 = (x["loss"] for x in rows if x["step"] == 5)
    assert first5 != again5  # the batches since the checkpoint were skipped: new data
    log = Path(r.logs[1]).read_text()
    assert "rolled back to checkpoint step 4 and skipping the 3 batches" in log
    assert not any("SDC check" in Path(lg).read_text() for lg in r.logs)


def test_preflight_collective_over_gloo_processes(tmp_path: Path) -> None:
    import json
    import os
    import subprocess
    import sys

    from trainer.ports import free_port

    port = free_port()
    procs = [subprocess.Popen([sys.executable, "-m", "trainer.preflight"], stdout=subprocess.PIPE, text=True,
                              env=dict(os.environ, RANK=str(r), WORLD_SIZE="3", MASTER_ADDR="127.0.0.1",
                                       MASTER_PORT=str(port), CUDA_VISIBLE_DEVICES="", PREFLIGHT_TIMEOUT_S="60"))
             for r in range(3)]
    answers = [json.loads(p.communicate(timeout=120)[0].strip().splitlines()[-1]) for p in procs]
    assert [a["ok"] for a in answers] == [True, True, True], answers
    assert answers[0]["message"] == "all-reduce over 3 ranks agreed"
