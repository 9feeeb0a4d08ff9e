"""Meta-device init: every layout starts from the eager one-process init, bit for bit, and a pipeline
rank allocates only its stage's layers."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from bench.init_memory import launch, train_config
from trainer.model import ModelArgs

pytestmark = [pytest.mark.slow, pytest.mark.timeout(300)]
MODEL = {"dim": 48, "n_layers": 4, "n_heads": 4, "n_kv_heads": 2, "vocab_size": 257, "max_seq_len": 64}


def _params(out: Path, world: int, prefix: str = "params") -> dict[str, torch.Tensor]:
    merged: dict[str, torch.Tensor] = {}
    for r in range(world):
        for name, t in torch.load(out / f"{prefix}-{r}.pt").items():
            if name in merged:
                assert torch.equal(merged[name], t), f"ranks disagree on {name}"
            merged[name] = t
    return merged


@pytest.fixture(scope="module")
def eager_one_process(tmp_path_factory: pytest.TempPathFactory) -> dict[str, torch.Tensor]:
    """The eager init (the whole model on the CPU, as before meta-device init), one process."""
    out = tmp_path_factory.mktemp("one-process")
    launch(train_config(MODEL, 1), out, "both", dump=True)
    eager, meta = _params(out, 1, "eager"), _params(out, 1)
    # A one-process run's initial parameters are those of the eager path, bit for bit.
    assert sorted(meta) == sorted(eager)
    for name, want in eager.items():
        assert meta[name].dtype == want.dtype and torch.equal(meta[name], want), name
    return eager


@pytest.mark.parametrize("layout", [{"dp": 2, "tp": 2}, {"dp": 1, "pp": 2}], ids=["dp2-tp2", "pp2"])
def test_meta_init_equals_the_eager_one_process_init(layout: dict[str, int], tmp_path: Path,
                                                    eager_one_process: dict[str, torch.Tensor]) -> None:
    cfg = train_config(MODEL, 1)
    cfg["parallel"] = dict(layout)
    records = launch(cfg, tmp_path, "meta", dump=True)
    got = _params(tmp_path, len(records))
    assert sorted(got) == sorted(eager_one_process)
    for name, want in eager_one_process.items():
        assert got[name].dtype == want.dtype and torch.equal(got[name], want), name
    if layout.get("pp", 1) > 1:
        # Each stage rank allocates its own layers only: together they hold the model once.
        assert sum(r["local_params"] for r in records) == ModelArgs(**MODEL).num_params()
        assert all(r["local_params"] < ModelArgs(**MODEL).num_params() * 0.6 for r in records)
