"""A checkpoint written by real tp2·pp2 gloo ranks, exported with `orchestrator export`:
transformers' LlamaForCausalLM gives the trainer's logits, and a new job started
from the export (`model.init_from`) under tp2 begins with bit-identical weights."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest
import torch

from orchestrator.catalog.db import sqlite_url
from orchestrator.catalog.repository import Catalog
from orchestrator.controller.trainer_config import trainer_config
from orchestrator.spec import JobSpec, load_job_file
from tests.cli import orch
from tests.conftest import small_job, write_job
from tests.dist import metrics, run_ranks
from trainer.checkpoint import committed_checkpoints
from trainer.consolidate import read_model_state
from trainer.model import Transformer

pytestmark = [pytest.mark.slow, pytest.mark.timeout(600)]
LOGIT_TOL = 1e-4


def _spec(folder: Path, name: str, **kw: Any) -> JobSpec:
    return load_job_file(write_job(folder / f"{name}.yaml", small_job(name, **kw)))


def _run(spec: JobSpec, run_dir: Path, **overrides: Any) -> Path:
    cfg = trainer_config(spec)
    for section, values in overrides.items():
        cfg[section].update(values)
    ckpt_dir = run_dir / "checkpoints"
    r = run_ranks(cfg, run_dir, ckpt_dir=ckpt_dir)
    assert r.returncodes == [0] * spec.world_size, Path(r.logs[0]).read_text()[-3000:]
    return committed_checkpoints(ckpt_dir)[-1].path


@pytest.fixture(scope="module")
def source(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """Job `src` (GQA: 4 heads, 2 kv heads) trained 3 steps under tp2·pp2, in a state folder's catalog."""
    root = tmp_path_factory.mktemp("hf")
    state = root / "state"
    spec = _spec(root, "src", dp=1, tp=2, pp=2, steps=3, interval=3, checkpoint={"async": False})
    run_dir = state / "runs" / "src"
    ckpt = _run(spec, run_dir)
    cat = Catalog(sqlite_url(state / "catalog.db"))
    cat.create_job("src", spec.model_dump(mode="json", by_alias=True), spec.world_size, spec.training.steps,
                   str(run_dir), None)
    cat.close()
    return {"root": root, "state": state, "spec": spec, "ckpt": ckpt}


@pytest.fixture(scope="module")
def exported(source: dict[str, Any]) -> Path:
    out = source["root"] / "export"
    env = dict(os.environ)
    r = orch(["export", "src", "--format", "hf", "--output", str(out), "--state-dir", str(source["state"]),
              "--json"], env)
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["step"] == 3
    return out


def test_transformers_gives_the_trainers_logits(source: dict[str, Any], exported: Path) -> None:
    from transformers import LlamaForCausalLM

    args = source["spec"].model.model_args()
    ours = Transformer(args)
    ours.load_state_dict(read_model_state(source["ckpt"], args))
    theirs = LlamaForCausalLM.from_pretrained(exported).eval()
    tokens = torch.randint(0, args.vocab_size, (2, 48), generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        a = ours(tokens, torch.zeros_like(tokens), torch.arange(tokens.shape[1]))
        b = theirs(tokens).logits
    diff = float((a - b).abs().max())
    assert diff <= LOGIT_TOL, diff


def test_job_started_from_the_export_has_the_same_weights(source: dict[str, Any], exported: Path) -> None:
    root = source["root"]
    spec = _spec(root, "dst", dp=1, tp=2, steps=1, interval=1, checkpoint={"async": False},
                 model={"init_from": str(exported)})
    # Learning rate and weight decay 0: the one step leaves the weights as the job started them.
    ckpt = _run(spec, root / "dst", optim={"lr_peak": 0.0, "lr_min": 0.0, "weight_decay": 0.0})
    assert [r["step"] for r in metrics(root / "dst")] == [1]
    args = spec.model.model_args()
    got, want = read_model_state(ckpt, args), read_model_state(source["ckpt"], args)
    assert set(got) == set(want)
    for name, t in want.items():
        assert torch.equal(got[name], t), name
