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


HELD_OUT_FLOORS = {
    # set: (files, category floor, host floor). Every floor follows mending that read the set's misses, so it
    # measures coverage of what the set found, not accuracy; a rule change that loses any of it fails here.
    # First, independent scores (BENCHMARKS.md, bench/results/classifier-*-first.json): heldout 88.0 % / 87.1 %,
    # heldout2 90.7 % / 69.2 %, heldout3 95.2 % / 71.7 % (category / host).
    "heldout": (117, 1.0, 0.92),
    "heldout2": (108, 1.0, 1.0),
    "heldout3": (83, 1.0, 1.0),
}


@pytest.mark.parametrize("name", list(HELD_OUT_FLOORS))
def test_the_held_out_sets_do_not_regress(name: str) -> None:
    files, category, host = HELD_OUT_FLOORS[name]
    r = evaluate(Path(__file__).resolve().parents[1] / "fixtures" / "evidence" / name)
    assert r["files"] == files
    assert r["accuracy"] >= category and r["host_accuracy"] >= host, r["confusions"]
    assert r["cordoned_without_hardware_fault"] == []
