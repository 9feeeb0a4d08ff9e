"""Flight-recorder dumps of both backends, parsed into rank progress and attributed: golden files.

gloo dumps were recorded from real stalled runs; NCCL dumps were constructed
to torch 2.13's format (tests/fixtures/flight_recorder/README.md says which
source defines each field). Each case names the culprit from the dumps alone.
"""

from __future__ import annotations

import json
import logging
import pickle
from pathlib import Path
from typing import Any

import pytest

from health.attribution import attribute
from health.detectors import detect_hang
from health.observations import RankObservation
from trainer.flight_recorder import (
    buffer_size,
    dump_file_prefix,
    dump_files,
    load_dump_file,
    loads_dump,
    parse_flight_record,
    progress_from_files,
)
from trainer.progress import RecorderReader

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "flight_recorder"
NOW = 1000.0


def _json_dumps(case: str) -> dict[int, dict[str, Any]]:
    return {int(p.stem.removeprefix("rank")): json.loads(p.read_text())
            for p in sorted((FIXTURES / case).glob("rank*.json"))}


def _file_dumps(case: str) -> dict[int, dict[str, Any]]:
    return {r: load_dump_file(p) for r, p in dump_files(FIXTURES / case, "nccl_trace_rank_").items()}


def _observations(dumps: dict[int, dict[str, Any]], **extra: dict[str, Any]) -> list[RankObservation]:
    out = []
    for rank, dump in sorted(dumps.items()):
        p = parse_flight_record(dump, {}, rank=rank)
        kw = dict(rank=rank, host=f"h{rank}", observed_at=NOW, alive=True, step=10, heartbeat=NOW - 0.5,
                  collectives=p.collectives, p2p=tuple(p.p2p or ()), recorder=p.recorder)
        kw.update(extra.get(str(rank), {}))
        out.append(RankObservation(**kw))
    return out


def test_gloo_recorded_stall_names_the_rank_that_never_entered_its_tp_all_reduce() -> None:
    """Recorded (record_gloo.py): rank 3 stalled before a TP all-reduce; 2 waits in it, 0 and 1 in the world one."""
    dumps = _json_dumps("gloo-dp2tp2-rank3-stalled")
    assert sorted(dumps) == [0, 1, 2, 3]
    obs = _observations(dumps)
    assert {o.recorder["backend"] for o in obs} == {"gloo"} and {o.recorder["state"] for o in obs} == {"ok"}
    assert all(o.p2p == () for o in obs), "gloo records no point-to-point operations"
    f = detect_hang(obs, NOW - 9, NOW, 5.0, layout={"dp": 2, "tp": 2})
    assert f is not None and f.ranks == (3,), f.summary
    assert "gloo:all_reduce" in f.summary and "flight recorder" not in f.summary
    waits = {(e.waiter, e.where.split(" group")[0]) for e in attribute(obs, {"dp": 2, "tp": 2}).direct}
    assert (2, "tp") in waits, waits
    # The same dumps with ranks 2 and 3 (one TP group) exchanged: now rank 2 is the one that never came.
    dumps[2], dumps[3] = dumps[3], dumps[2]
    assert attribute(_observations(dumps), {"dp": 2, "tp": 2}).culprits == (2,)


def test_nccl_json_dump_names_the_rank_behind_in_the_dp_group() -> None:
    dumps = _json_dumps("nccl-dp4-rank2-behind")
    obs = _observations(dumps)
    assert obs[0].collectives["1"] == {"enqueued": 22, "completed": 21, "op": "nccl:_reduce_scatter_base",
                                       "desc": "mesh_dp"}
    assert obs[2].collectives["1"]["enqueued"] == obs[2].collectives["1"]["completed"] == 21
    f = detect_hang(obs, NOW - 9, NOW, 5.0, layout={"dp": 4})
    assert f is not None and f.ranks == (2,), f.summary
    assert "nccl:_reduce_scatter_base #22 on dp group [0, 1, 2, 3]" in f.summary
    assert f.evidence["flight_recorder"] == {}


def test_swapping_the_stuck_ranks_dump_moves_the_culprit() -> None:
    dumps = _json_dumps("nccl-dp4-rank2-behind")
    dumps[0], dumps[2] = dumps[2], dumps[0]
    assert attribute(_observations(dumps), {"dp": 4}).culprits == (0,)


def test_nccl_watchdog_files_follow_a_pipeline_receive_to_the_stalled_sender() -> None:
    """tp2·pp2: rank 1 stalled before its forward send; rank 3 waits in the receive, rank 0 in a TP all-reduce."""
    dumps = _file_dumps("nccl-tp2pp2-rank1-stalled")
    assert sorted(dumps) == [0, 1, 2, 3] and all("frames" in e for e in dumps[3]["entries"])
    obs = _observations(dumps)
    assert [c for c in obs[3].p2p if c["posted"]] == [
        {"chan": "2 1>3", "role": "recv", "peer": 1, "posted": 1, "done": 0}]
    assert [c for c in obs[0].p2p if c["posted"]] == [
        {"chan": "1 0>2", "role": "send", "peer": 2, "posted": 1, "done": 1}]
    a = attribute(obs, {"pp": 2, "tp": 2})
    assert a.culprits == (1,) and a.certain, a.reason
    from_files = progress_from_files(FIXTURES / "nccl-tp2pp2-rank1-stalled")
    assert {r: p.collectives for r, p in from_files.items()} == {o.rank: o.collectives for o in obs}
    assert {(e.waiter, e.kind) for e in a.direct} == {(0, "collective"), (3, "recv")}
    # Without the recorder's receive, rank 3 no longer points at rank 1: the parsed transfer is the evidence.
    bare = _observations(dumps, **{"3": {"p2p": ()}})
    assert {(e.waiter, e.kind) for e in attribute(bare, {"pp": 2, "tp": 2}).direct} == {(0, "collective")}


def test_recorder_off_is_said_in_the_hang_finding() -> None:
    dumps = _file_dumps("nccl-recorder-off")
    assert all(d["entries"] == [] and d["pg_status"] == {} for d in dumps.values())
    obs = _observations(dumps)
    assert {o.recorder["state"] for o in obs} == {"empty"}
    f = detect_hang(obs, NOW - 9, NOW, 5.0, layout={"dp": 4})
    assert f is not None and not f.evidence["attribution"]["certain"]
    assert "flight recorder empty on ranks 0, 1, 2, 3" in f.summary, f.summary
    assert f.evidence["flight_recorder"] == {"empty": [0, 1, 2, 3]}


def test_buffer_size_reads_the_variables_torch_reads(monkeypatch: pytest.MonkeyPatch) -> None:
    assert buffer_size({}) == 2000
    assert buffer_size({"TORCH_NCCL_TRACE_BUFFER_SIZE": "0"}) == 0
    assert buffer_size({"TORCH_FR_BUFFER_SIZE": "256", "TORCH_NCCL_TRACE_BUFFER_SIZE": "0"}) == 256
    assert dump_file_prefix({"TORCH_NCCL_DEBUG_INFO_TEMP_FILE": "/d/x_"}) == "/d/x_"
    assert dump_file_prefix({"HOME": "/home/u"}) == "/home/u/.cache/torch/comm_lib_trace_rank_"


def test_reader_says_once_when_the_recorder_is_off(monkeypatch: pytest.MonkeyPatch,
                                                   caplog: pytest.LogCaptureFixture) -> None:
    monkeypatch.setenv("TORCH_FR_BUFFER_SIZE", "0")
    reader = RecorderReader(backend=lambda: "nccl")
    with caplog.at_level(logging.WARNING):
        states = [reader.read().recorder["state"] for _ in range(3)]
    assert states == ["off"] * 3
    assert len([r for r in caplog.records if "flight recorder is off" in r.getMessage()]) == 1


def test_reader_names_the_dump_this_torch_lacks(monkeypatch: pytest.MonkeyPatch,
                                                caplog: pytest.LogCaptureFixture) -> None:
    """This CPU build of torch has gloo's recorder only: asking for NCCL's is a logged, named failure."""
    monkeypatch.delenv("TORCH_FR_BUFFER_SIZE", raising=False)
    monkeypatch.delenv("TORCH_NCCL_TRACE_BUFFER_SIZE", raising=False)
    torch = pytest.importorskip("torch")
    if hasattr(torch._C._distributed_c10d, "_dump_nccl_trace_json"):
        pytest.skip("this torch has NCCL's recorder")
    reader = RecorderReader(backend=lambda: "nccl")
    with caplog.at_level(logging.WARNING):
        got = [reader.read().recorder for _ in range(2)]
    assert got[0]["state"] == "unreadable" and "_dump_nccl_trace" in got[0]["detail"]
    assert len([r for r in caplog.records if "cannot read the nccl flight recorder" in r.getMessage()]) == 1


def test_a_dump_pickle_with_code_in_it_is_refused() -> None:
    class Evil:
        def __reduce__(self) -> tuple[Any, ...]:
            return (print, ("ran",))

    with pytest.raises(pickle.UnpicklingError):
        loads_dump(pickle.dumps({"entries": [Evil()]}, protocol=2))


def test_beacon_update_reads_gloos_recorder_and_keeps_the_pipelines_own_counts(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """The real gloo dump of this process is read (empty unless an earlier test ran collectives here);
    on gloo the pipeline's own p2p counts stay in the beacon."""
    from trainer.progress import BeaconThread, RankProgress

    monkeypatch.delenv("TORCH_FR_BUFFER_SIZE", raising=False)
    progress = RankProgress()
    progress.posted("recv", "fwd 0>1", 0)
    t = BeaconThread(lambda u: None, progress=progress, reader=RecorderReader(backend=lambda: "gloo"))
    u = t.update()
    assert u["recorder"]["backend"] == "gloo" and u["recorder"]["state"] in ("empty", "ok"), u["recorder"]
    assert isinstance(u["collectives"], dict) and u["p2p"] == [progress.snapshot()["p2p"][0]]
