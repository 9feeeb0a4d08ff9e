"""Culprit attribution per process group and pipeline channel; golden files recorded from real stalls."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from health.attribution import attribute, mesh_groups
from health.detectors import detect_hang
from health.observations import RankObservation, observation_from_poll
from trainer.flight_recorder import parse_flight_record

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "hangs"
NOW = 1000.0


def _obs(rank: int, **kw) -> RankObservation:
    base = dict(rank=rank, host=f"h{rank // 2}", observed_at=NOW, alive=True, step=10, heartbeat=NOW - 0.5)
    base.update(kw)
    return RankObservation(**base)


def _coll(seq: int, done: int, op: str = "gloo:all_reduce", desc: str = "mesh_tp") -> dict:
    return {"enqueued": seq, "completed": done, "op": op, "desc": desc}


@pytest.mark.parametrize("layout", [(4, 1, 1, 1), (1, 2, 1, 2), (2, 1, 1, 2), (1, 2, 2, 1), (1, 4, 1, 1),
                                    (2, 2, 2, 2)])
def test_mesh_groups_agree_with_the_trainer_mesh(layout: tuple[int, int, int, int]) -> None:
    from trainer.parallel_dims import ParallelDims

    dp, pp, cp, tp = layout
    dims = ParallelDims(dp=dp, tp=tp, pp=pp, cp=cp, world_size=dp * pp * cp * tp)
    groups = mesh_groups({"dp": dp, "pp": pp, "cp": cp, "tp": tp})
    for dim in ("dp", "pp", "cp", "tp"):
        for g in groups[dim]:
            coords = [dims.coords(r) for r in g]
            assert len(g) == getattr(dims, dim)
            others = [{k: v for k, v in c.items() if k != dim} for c in coords]
            assert all(o == others[0] for o in others), (dim, g)
    for g in groups["dp_cp"]:
        assert len({(dims.coords(r)["pp"], dims.coords(r)["tp"]) for r in g}) == 1 and len(g) == dp * cp


def test_sequences_of_different_tp_groups_are_not_compared() -> None:
    """tp2·pp2: group [0,1] ran far more collectives than group [2,3]; rank 3 lags within its own group."""
    g01 = {"11": {"dim": "tp", "ranks": [0, 1]}}
    g23 = {"12": {"dim": "tp", "ranks": [2, 3]}}
    obs = [_obs(0, groups=g01, collectives={"11": _coll(300, 300)}),
           _obs(1, groups=g01, collectives={"11": _coll(300, 300)}),
           _obs(2, groups=g23, collectives={"12": _coll(85, 84)}),
           _obs(3, groups=g23, collectives={"12": _coll(84, 84)})]
    f = detect_hang(obs, NOW - 9, NOW, 5.0)
    assert f is not None and f.ranks == (3,), f.summary
    assert "gloo:all_reduce #85 on tp group [2, 3]" in f.summary


def test_chain_through_a_pipeline_receive_to_a_tp_laggard() -> None:
    """Stage 0 waits for stage 1's gradients; rank 2 of stage 1 waits in a TP all-reduce for rank 3."""
    obs = [_obs(0, p2p=({"chan": "bwd 1>0", "role": "recv", "peer": 2, "posted": 11, "done": 10},)),
           _obs(1, p2p=({"chan": "bwd 1>0", "role": "recv", "peer": 3, "posted": 11, "done": 10},)),
           _obs(2, collectives={"12": _coll(85, 84)},
                p2p=({"chan": "bwd 1>0", "role": "send", "peer": 0, "posted": 10, "done": 10},)),
           _obs(3, collectives={"12": _coll(84, 84)},
                p2p=({"chan": "bwd 1>0", "role": "send", "peer": 1, "posted": 10, "done": 10},))]
    a = attribute(obs, {"tp": 2, "pp": 2})
    assert a.culprits == (3,) and a.certain
    assert [(e.waiter, e.on) for e in a.chain] == [(0, (2,)), (2, (3,))]
    kinds = {(e.waiter, e.kind) for e in a.direct}
    assert kinds == {(1, "recv"), (2, "collective")}


def test_unmatched_send_points_at_the_receiver_unless_it_waits_for_the_sender() -> None:
    # Stage 0 posted a send stage 1 never received, and nobody waits in a receive: stage 1 is stuck.
    obs = [_obs(0, p2p=({"chan": "fwd 0>1", "role": "send", "peer": 1, "posted": 5, "done": 5},)),
           _obs(1, p2p=({"chan": "fwd 0>1", "role": "recv", "peer": 0, "posted": 4, "done": 4},))]
    assert attribute(obs).culprits == (1,)
    # Stage 1 waits in a receive from stage 0 (another channel), so stage 0's unmatched send is no excuse.
    obs = [_obs(0, p2p=({"chan": "fwd 0>1", "role": "send", "peer": 1, "posted": 5, "done": 5},
                        {"chan": "bwd 1>0", "role": "recv", "peer": 1, "posted": 3, "done": 3})),
           _obs(1, p2p=({"chan": "fwd 0>1", "role": "recv", "peer": 0, "posted": 4, "done": 4},
                        {"chan": "bwd 1>0", "role": "send", "peer": 0, "posted": 3, "done": 3},
                        {"chan": "x 9>1", "role": "recv", "peer": 0, "posted": 1, "done": 0}))]
    assert attribute(obs).culprits == (0,)


def test_no_single_rank_names_the_smallest_group_not_rank_0() -> None:
    stuck = {"12": _coll(50, 49)}
    obs = [_obs(0, collectives={"11": _coll(50, 50)}), _obs(1, collectives={"11": _coll(50, 50)}),
           _obs(2, collectives=stuck), _obs(3, collectives=stuck)]
    f = detect_hang(obs, NOW - 9, NOW, 5.0, layout={"tp": 2, "pp": 2})
    assert f is not None and f.ranks == (2, 3), f.summary
    assert "no single rank stands out" in f.summary and "tp group [2, 3]" in f.summary
    assert f.evidence["attribution"]["certain"] is False
    # A stopped process breaks the tie, as one more piece of evidence.
    obs[3] = _obs(3, collectives=stuck, stopped=True, heartbeat=NOW - 7)
    f = detect_hang(obs, NOW - 9, NOW, 5.0, layout={"tp": 2, "pp": 2})
    assert f is not None and f.ranks == (3,) and "stopped" in f.summary


def test_flight_record_is_keyed_by_group_name() -> None:
    dump = json.loads((FIXTURES / "flight-record-tp2pp2-rank2.json").read_text())
    names: dict[str, tuple[str, str]] = {}
    got = parse_flight_record(dump, names).collectives
    assert got["12"] == {"enqueued": 42, "completed": 42, "op": "gloo:all_reduce", "desc": "mesh_tp"}
    assert got["0"]["desc"] == "default_pg" and got["0"]["enqueued"] == 4
    # Entries roll out of the ring buffer; the learned name stays.
    assert parse_flight_record({**dump, "entries": []}, names).collectives["12"]["enqueued"] == 42


GOLDEN = sorted(FIXTURES.glob("*-rank*-*.json"))


@pytest.mark.parametrize("path", GOLDEN, ids=[p.stem for p in GOLDEN])
def test_golden_stalls_name_the_victim(path: Path) -> None:
    """Beacons recorded when the detector fired on a real stalled (alive) rank (bench/hang_matrix.py)."""
    g = json.loads(path.read_text())
    obs = [observation_from_poll(p, "h", g["now"]) for p in g["polls"]]
    assert not any(o.stopped for o in obs), "the victim was alive"
    f = detect_hang(obs, g["last_progress_at"], g["now"], g["limit_s"], g["layout"])
    assert f is not None and f.ranks == (g["victim"],), f.summary
    assert " wait in " in f.summary and ("gloo:" in f.summary or "pipeline recv" in f.summary)
    # Without the groups the beacons name, the layout and the groups' descriptions suffice.
    bare = [observation_from_poll({**p, "beacon": {k: v for k, v in p["beacon"].items() if k != "groups"}},
                                  "h", g["now"]) for p in g["polls"]]
    assert attribute(bare, g["layout"]).culprits == (g["victim"],)


def test_a_large_job_is_attributed_quickly() -> None:
    """2,048 ranks (dp64·pp4·tp8): every rank waits in a world all-reduce that rank 1234 never entered."""
    import time

    layout = {"dp": 64, "pp": 4, "tp": 8}
    tp_name = {r: f"t{i}" for i, g in enumerate(mesh_groups(layout)["tp"]) for r in g}
    obs = [_obs(r, collectives={"0": _coll(50 if r == 1234 else 51, 50, desc="default_pg"),
                                tp_name[r]: _coll(10, 10)}) for r in range(2048)]
    t0 = time.process_time()  # CPU time: the bound is on the work, not on what else the machine runs
    a = attribute(obs, layout)
    assert a.culprits == (1234,) and a.certain
    assert time.process_time() - t0 < 2.0, "quadratic or worse in the number of ranks"
