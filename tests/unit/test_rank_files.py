"""A file a rank writes on its own host reaches the controller in whole lines, from where the attempt began."""

from __future__ import annotations

from pathlib import Path

from orchestrator.controller.worker import RankWorker


def test_read_from_returns_whole_new_lines_only(tmp_path: Path) -> None:
    w = RankWorker("j", 0, str(tmp_path), warm_standby=False)
    assert w.read_from("metrics.jsonl", None) == ("", 0)  # nothing written yet
    f = tmp_path / "metrics.jsonl"
    f.write_text('{"step": 1}\n')
    _, start = w.read_from("metrics.jsonl", None)  # an attempt begins: earlier rows are not its own
    assert start == f.stat().st_size
    with open(f, "a") as out:
        out.write('{"step": 2}\n{"step": 3')
    text, off = w.read_from("metrics.jsonl", start)
    assert text == '{"step": 2}\n'
    with open(f, "a") as out:
        out.write("}\n")
    text, off = w.read_from("metrics.jsonl", off)
    assert text == '{"step": 3}\n' and off == f.stat().st_size


def test_sees_tells_a_shared_folder_from_a_private_one(tmp_path: Path) -> None:
    (tmp_path / ".controller").write_text("abc")
    assert RankWorker("j", 0, str(tmp_path), warm_standby=False).sees(".controller", "abc")
    assert not RankWorker("j", 0, str(tmp_path / "elsewhere"), warm_standby=False).sees(".controller", "abc")
