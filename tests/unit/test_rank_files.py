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


class _Remote:
    def __init__(self, fn: object) -> None:
        self.remote = fn


class _Supervisor:
    """A RankWorker called the way the worker group calls it, without Ray (`ray.get` is patched to pass)."""

    def __init__(self, w: RankWorker) -> None:
        self.read_from = _Remote(w.read_from)


def test_rows_rank_0s_host_had_not_handed_over_come_from_the_copy_on_another_host(tmp_path: Path,
                                                                                  monkeypatch: object) -> None:
    """Rank 0 on h2, its copy on h1: rows 1-2 reach the controller from rank 0; h2 dies after writing row 3 (and
    a rolled-back row 2 again, as after a loss spike); rows 3 and 2 come from h1's copy, once, in order."""
    import json

    import orchestrator.controller.worker_group as wg
    from orchestrator.controller.callbacks import RankPlacement

    monkeypatch.setattr(wg.ray, "get", lambda ref, timeout=None: ref)  # type: ignore[attr-defined]
    controller, h2, h1 = tmp_path / "controller", tmp_path / "h2", tmp_path / "h1"
    for d in (controller, h2, h1):
        d.mkdir()
    (h1 / wg.METRICS_COPY_FILE).write_text('{"step": 9, "attempt": 1}\n')  # an earlier attempt's rows
    group = wg.RayWorkerGroup.__new__(wg.RayWorkerGroup)
    group.run_dir = str(controller)
    group.gang = wg.Gang(workers=[_Supervisor(RankWorker("j", 0, str(h2), warm_standby=False)),
                                  _Supervisor(RankWorker("j", 1, str(h1), warm_standby=False))],
                         placements=[RankPlacement(0, "h2", "n2", "10.0.0.2"),
                                     RankPlacement(1, "h1", "n1", "10.0.0.1")])
    group._metrics_offset = 0
    group._metrics_copy, group._metrics_rows = group._metrics_copy_start(), 0
    assert group._metrics_copy is not None and group._metrics_copy[0] == 1

    def write(host: Path, name: str, *steps: int) -> None:
        with open(host / name, "a") as f:
            f.writelines(json.dumps({"step": s, "attempt": 2}) + "\n" for s in steps)

    write(h2, wg.METRICS_FILE, 1, 2)
    write(h1, wg.METRICS_COPY_FILE, 1, 2)
    group._copy_metrics()
    write(h2, wg.METRICS_FILE, 3, 2)
    write(h1, wg.METRICS_COPY_FILE, 3, 2)
    group.gang.gone.add(0)  # h2 died before the next poll
    group._copy_metrics()
    group._copy_metrics()  # and the polls after it add nothing twice
    rows = [json.loads(x) for x in (controller / wg.METRICS_FILE).read_text().splitlines()]
    assert [r["step"] for r in rows] == [1, 2, 3, 2]
