"""`model.init_from` in the job file: checked at submit time against the model section."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from orchestrator.controller.trainer_config import trainer_config
from orchestrator.spec import JobFileError, load_job_file
from tests.conftest import small_job, write_job
from tests.unit.test_cli_validation import _submit
from trainer.hf import write_hf_folder
from trainer.model import ModelArgs, Transformer


def _hf_folder(folder: Path, **model: int) -> Path:
    """An exported folder of the small job's model, or of another shape."""
    args = ModelArgs(**{"dim": 32, "n_layers": 2, "n_heads": 4, "n_kv_heads": 2, "max_seq_len": 64, **model})
    folder.mkdir(parents=True)
    write_hf_folder(folder, Transformer(args).state_dict(), args, dtype=torch.float32)
    return folder


def _job(tmp_path: Path, init_from: str) -> Path:
    return write_job(tmp_path / "job.yaml", small_job(model={"init_from": init_from}))


def test_relative_folder_is_resolved_next_to_the_job_file(tmp_path: Path) -> None:
    _hf_folder(tmp_path / "weights")
    spec = load_job_file(_job(tmp_path, "weights"))
    assert spec.model.init_from == str(tmp_path / "weights")
    assert trainer_config(spec)["init_from"] == str(tmp_path / "weights")


def test_missing_folder(tmp_path: Path) -> None:
    with pytest.raises(JobFileError, match=r"model\.init_from: no such folder .*absent"):
        load_job_file(_job(tmp_path, "absent"))


def test_folder_without_config(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    with pytest.raises(JobFileError, match=r"model\.init_from: .*no config\.json"):
        load_job_file(_job(tmp_path, "empty"))


@pytest.mark.parametrize("other,field", [({"n_kv_heads": 4}, "num_key_value_heads"),
                                         ({"n_layers": 3}, "num_hidden_layers"),
                                         ({"dim": 64}, "hidden_size")])
def test_other_shape_is_refused(tmp_path: Path, other: dict, field: str) -> None:
    _hf_folder(tmp_path / "weights", **other)
    with pytest.raises(JobFileError, match=rf"model\.init_from: .*{field} is") as e:
        load_job_file(_job(tmp_path, "weights"))
    assert "\n" not in str(e.value)


def test_weights_that_contradict_config_json(tmp_path: Path) -> None:
    real = _hf_folder(tmp_path / "weights")
    _hf_folder(tmp_path / "other", n_kv_heads=4)
    (tmp_path / "other" / "config.json").write_bytes((real / "config.json").read_bytes())
    with pytest.raises(JobFileError, match=r"model\.init_from: .*k_proj\.weight has shape \(32, 32\)"):
        load_job_file(_job(tmp_path, "other"))
    (real / "model.safetensors").unlink()
    with pytest.raises(JobFileError, match=r"model\.init_from: .*neither model\.safetensors"):
        load_job_file(_job(tmp_path, "weights"))


def test_submit_refuses_a_mismatch_with_one_line_and_exit_2(tmp_path: Path, cli_env: dict[str, str],
                                                            state_dir: Path) -> None:
    _hf_folder(tmp_path / "weights", n_kv_heads=4)
    r = _submit([str(_job(tmp_path, "weights"))], cli_env)
    assert r.returncode == 2, r.stderr
    lines = [ln for ln in r.stderr.strip().splitlines() if ln.strip()]
    assert len(lines) == 1 and "num_key_value_heads" in lines[0], r.stderr
    assert not state_dir.exists()
