from __future__ import annotations

from pathlib import Path

import pytest

from orchestrator.spec import JobFileError, job_checkpoint_dir, load_job_file
from tests.conftest import REPO, small_job, write_job


def test_example_job_is_valid() -> None:
    spec = load_job_file(REPO / "examples" / "job.yaml")
    assert spec.world_size == 4
    assert spec.model.rope_theta == 500000
    assert spec.checkpoint.async_ is True


def _error(tmp_path: Path, job: dict) -> str:
    with pytest.raises(JobFileError) as e:
        load_job_file(write_job(tmp_path / "job.yaml", job))
    msg = str(e.value)
    assert "\n" not in msg
    return msg


def test_unknown_key_names_the_field(tmp_path: Path) -> None:
    job = small_job()
    job["training"]["stepz"] = 3
    assert "training.stepz: unknown key" in _error(tmp_path, job)


def test_unknown_section(tmp_path: Path) -> None:
    job = small_job()
    job["extras"] = {}
    assert "extras: unknown key" in _error(tmp_path, job)


def test_wrong_type(tmp_path: Path) -> None:
    job = small_job()
    job["parallelism"]["dp"] = "two"
    assert "parallelism.dp" in _error(tmp_path, job)


def test_a_value_for_a_union_names_what_each_member_wants(tmp_path: Path) -> None:
    job = small_job()
    job["checkpoint"]["interval_steps"] = "sometimes"
    err = _error(tmp_path, job)
    assert err.endswith("checkpoint.interval_steps: should be a valid integer or 'auto', not 'sometimes'"), err


def test_a_union_error_still_counts_the_others(tmp_path: Path) -> None:
    job = small_job()
    job["checkpoint"]["interval_steps"] = "sometimes"
    job["training"]["stepz"] = 3
    assert "(and 1 more)" in _error(tmp_path, job)


def test_two_fields_of_one_section_are_not_taken_for_a_union(tmp_path: Path) -> None:
    job = small_job()
    job["training"]["steps"] = "many"
    job["training"]["seed"] = "some"
    err = _error(tmp_path, job)
    assert "training.steps: Input should be a valid integer" in err and "(and 1 more)" in err, err


def test_a_whole_job_check_is_named_by_its_field_alone(tmp_path: Path) -> None:
    err = _error(tmp_path, small_job(tp=3, dp=1))
    assert "(top level)" not in err and ": parallelism.tp: n_heads (4) must be divisible by tp (3)" in err, err


def test_missing_required(tmp_path: Path) -> None:
    job = small_job()
    del job["training"]["steps"]
    assert "training.steps: required key is missing" in _error(tmp_path, job)


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(JobFileError, match="no such job file"):
        load_job_file(tmp_path / "nope.yaml")


def test_not_yaml(tmp_path: Path) -> None:
    p = tmp_path / "job.yaml"
    p.write_text("name: [unclosed\n")
    with pytest.raises(JobFileError, match="not valid YAML"):
        load_job_file(p)


def test_degrees_do_not_fit_resources(tmp_path: Path) -> None:
    job = small_job(dp=4, tp=2, resources={"nodes": 1, "ranks_per_node": 4})
    assert "do not fit resources" in _error(tmp_path, job)


def test_heads_not_divisible_by_tp(tmp_path: Path) -> None:
    job = small_job(tp=3, dp=1)
    assert "n_heads (4) must be divisible by tp (3)" in _error(tmp_path, job)


def test_seq_len_divisible_by_two_cp(tmp_path: Path) -> None:
    job = small_job(cp=3, dp=1)
    job["training"]["seq_len"] = 32
    assert "2*cp" in _error(tmp_path, job)


def test_layers_at_least_pipeline_stages(tmp_path: Path) -> None:
    job = small_job(pp=4, dp=1)
    assert "pipeline stages need n_layers >= 4" in _error(tmp_path, job)


def test_batch_divisible_by_dp(tmp_path: Path) -> None:
    job = small_job(dp=2)
    job["training"]["global_batch_size"] = 7
    assert "not divisible by dp" in _error(tmp_path, job)


def test_data_without_files(tmp_path: Path) -> None:
    job = small_job(data=str(tmp_path / "nothing" / "*.txt"))
    assert "data.paths: no files match" in _error(tmp_path, job)


def test_relative_data_paths_resolve_against_job_file(tmp_path: Path) -> None:
    (tmp_path / "corpus").mkdir()
    (tmp_path / "corpus" / "a.txt").write_text("hello")
    spec = load_job_file(write_job(tmp_path / "job.yaml", small_job(data="corpus/*.txt")))
    assert spec.data.paths == [str(tmp_path / "corpus" / "*.txt")]


def test_jobs_sharing_a_checkpoint_folder_get_one_folder_each(tmp_path: Path) -> None:
    a = load_job_file(write_job(tmp_path / "a.yaml", small_job("a", checkpoint={"folder": "shared"})))
    b = load_job_file(write_job(tmp_path / "b.yaml", small_job("b", checkpoint={"folder": "shared"})))
    assert job_checkpoint_dir(a, tmp_path / "runs" / "a") == tmp_path / "shared" / "a"
    assert job_checkpoint_dir(b, tmp_path / "runs" / "b") == tmp_path / "shared" / "b"
    default = load_job_file(write_job(tmp_path / "c.yaml", small_job("c")))
    assert job_checkpoint_dir(default, tmp_path / "runs" / "c") == tmp_path / "runs" / "c" / "checkpoints"
