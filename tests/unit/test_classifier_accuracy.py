"""The accuracy benchmark reads the label convention of tests/fixtures/evidence/README.md and scores honestly."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from bench.classifier_accuracy import evaluate, main

XID79 = "Mar  3 04:12:01 node-17 kernel: NVRM: Xid (PCI:0000:86:00): 79, pid=0, GPU has fallen off the bus.\n"


def _set(root: Path, files: dict[str, str], hosts: dict[str, str] | None = None) -> Path:
    for rel, text in files.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text(text)
    if hosts is not None:
        (root / "hosts.json").write_text(json.dumps(hosts))
    return root


def test_scores_category_and_host_per_file(tmp_path: Path) -> None:
    root = _set(tmp_path, {"faulty_gpu/a.log": XID79, "ssd/b.log": XID79, "unknown/c.log": "step 1 loss 2.0\n"},
                {"faulty_gpu/a.log": "node-18", "ssd/b.log": "node-17"})
    r = evaluate(root)
    assert (r["files"], r["accuracy"], r["host_accuracy"], r["host_files"]) == (3, round(2 / 3, 3), 0.5, 2)
    assert r["per_category"]["ssd"] == {"n": 1, "correct": 0, "accuracy": 0.0}
    assert r["confusions"] == {"ssd -> faulty_gpu": 1}
    assert r["cordoned_without_hardware_fault"] == []


def test_non_category_folder_is_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    _set(tmp_path, {"gremlins/a.log": XID79})
    assert main([str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "gremlins" in err and len(err.strip().splitlines()) == 1
    assert main([str(tmp_path / "missing")]) == 2


def test_the_held_out_set_does_not_regress() -> None:
    """Floors at the score measured after its misses were mended (100 % category, 92.9 % host; the first,
    independent score was 88.0 % and 87.1 %, BENCHMARKS.md): a rule change that loses any of it fails here."""
    r = evaluate(Path(__file__).resolve().parents[1] / "fixtures" / "evidence" / "heldout")
    assert r["files"] == 117
    assert r["accuracy"] >= 1.0 and r["host_accuracy"] >= 0.92, r["confusions"]
    assert r["cordoned_without_hardware_fault"] == []


def test_the_second_held_out_set_does_not_regress() -> None:
    """heldout2's first independent score was 90.7 % category / 69.2 % host (bench/results/classifier-heldout2-first
    .json). The floor follows mending that read its misses (bench/results/classifier-heldout2-after.json), so it
    measures coverage of what the set found, not accuracy: a rule change that loses any of it fails here."""
    r = evaluate(Path(__file__).resolve().parents[1] / "fixtures" / "evidence" / "heldout2")
    assert r["files"] == 108
    assert r["accuracy"] >= 1.0 and r["host_accuracy"] >= 1.0, r["confusions"]
    assert r["cordoned_without_hardware_fault"] == []


def test_the_third_held_out_set_does_not_regress() -> None:
    """heldout3's first independent score was 95.2 % category / 71.7 % host (bench/results/classifier-heldout3-first
    .json). The floor follows mending that read its misses (bench/results/classifier-heldout3-after.json), so it
    measures coverage of what the set found, not accuracy: a rule change that loses any of it fails here."""
    r = evaluate(Path(__file__).resolve().parents[1] / "fixtures" / "evidence" / "heldout3")
    assert r["files"] == 83
    assert r["accuracy"] >= 1.0 and r["host_accuracy"] >= 1.0, r["confusions"]
    assert r["cordoned_without_hardware_fault"] == []
