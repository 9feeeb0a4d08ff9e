"""A checkpoint written under one layout resumes under another: loss continuous, no sample lost or repeated."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.dist import final_losses, metrics, run_ranks, tiny_cfg

pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]
LOSS_TOL = 2e-3
GBS = 8
MODEL = {"dim": 32, "n_layers": 4, "n_heads": 4, "n_kv_heads": 4, "vocab_size": 257, "max_seq_len": 64}


def _cfg(**layout) -> dict:
    return tiny_cfg(steps=10, gbs=GBS, async_save=False, model=MODEL, **layout)


def _audit(run_dir: Path, steps: int) -> None:
    """Every step trained exactly the samples [step*B, (step+1)*B), the newest attempt winning."""
    by_step: dict[int, tuple[int, list[int]]] = {}
    rows = []
    for f in run_dir.glob("samples/samples-rank*.jsonl"):
        rows += [json.loads(x) for x in f.read_text().splitlines()]
    for r in rows:
        att, samples = by_step.get(r["step"], (0, []))
        if r["attempt"] > att:
            samples = []
            att = r["attempt"]
        if r["attempt"] == att:
            samples = samples + r["samples"]
        by_step[r["step"]] = (att, samples)
    assert sorted(by_step) == list(range(1, steps + 1))
    for step, (_, samples) in by_step.items():
        assert sorted(samples) == list(range((step - 1) * GBS, step * GBS)), step


@pytest.fixture(scope="module")
def reference(tmp_path_factory: pytest.TempPathFactory) -> dict[int, float]:
    d = tmp_path_factory.mktemp("ref")
    assert run_ranks(_cfg(dp=2, tp=2), d).returncodes == [0] * 4
    return final_losses(metrics(d))


@pytest.mark.parametrize("first,second", [
    ({"dp": 2, "tp": 2}, {"dp": 1, "tp": 4}),
    ({"dp": 1, "tp": 2, "pp": 2}, {"dp": 1, "pp": 2, "cp": 2}),  # saved by pipeline stages, loaded by others
    ({"dp": 2}, {"dp": 4}),  # more data-parallel ranks than the checkpoint was written by
])
def test_resume_under_another_layout(tmp_path: Path, reference: dict[int, float], first: dict, second: dict) -> None:
    env = {"TRAINER_SAMPLE_LOG": str(tmp_path / "samples")}
    (tmp_path / "samples").mkdir()
    world1 = first.get("dp", 1) * first.get("tp", 1) * first.get("pp", 1) * first.get("cp", 1)
    r = run_ranks(_cfg(**first), tmp_path, env_extra=env, control={i: {"exit_at_step": 7} for i in range(world1)})
    assert all(c == 1 for c in r.returncodes)
    r = run_ranks(_cfg(**second), tmp_path, attempt=2, env_extra=env)
    assert all(c == 0 for c in r.returncodes), Path(r.logs[0]).read_text()[-3000:]
    rows = metrics(tmp_path)
    assert [x["step"] for x in rows if x["attempt"] == 2][0] == 5  # resumed from the step-4 checkpoint
    got = final_losses(rows)
    for step in range(1, 11):
        assert abs(got[step] - reference[step]) <= LOSS_TOL, (step, got[step], reference[step])
    _audit(tmp_path, 10)
