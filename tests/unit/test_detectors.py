from __future__ import annotations

from health.detectors import (
    HangConfig,
    detect_crash,
    detect_hang,
    detect_stragglers,
    hang_limit,
)
from health.observations import FindingKind, RankObservation

NOW = 1000.0


def _obs(rank: int, **kw) -> RankObservation:
    base = dict(rank=rank, host=f"h{rank // 2}", observed_at=NOW, alive=True, step=10, heartbeat=NOW - 0.5)
    base.update(kw)
    return RankObservation(**base)


def test_no_fault_no_finding() -> None:
    obs = [_obs(r) for r in range(4)]
    assert detect_crash(obs, NOW) is None
    assert detect_hang(obs, NOW - 1, NOW, 5.0) is None


def test_crash_blames_the_signalled_rank_not_its_peers() -> None:
    obs = [_obs(0, alive=False, returncode=1, exited_at=NOW - 1.0),
           _obs(1, alive=False, returncode=-9, signal="SIGKILL", exited_at=NOW - 1.5),
           _obs(2), _obs(3, alive=False, returncode=1, exited_at=NOW - 1.2)]
    f = detect_crash(obs, NOW)
    assert f is not None and f.kind is FindingKind.CRASH
    assert f.ranks == (1,) and f.hosts == ("h0",) and f.fault_at == NOW - 1.5
    assert "SIGKILL" in f.summary and len(f.evidence["exits"]) == 3


def test_crash_carries_the_reason_the_rank_gave() -> None:
    why = "checkpoint load failed: no committed checkpoint in /c/job loads, tried step-00000008 (checksum mismatch)"
    obs = [_obs(0, alive=False, returncode=74, exited_at=NOW - 1.0, error=why),
           _obs(1, alive=False, returncode=74, exited_at=NOW - 0.9, error=why)]
    f = detect_crash(obs, NOW)
    assert f is not None and f.summary.endswith("exit code 74: " + why)


def test_lost_worker_is_node_lost() -> None:
    f = detect_crash([_obs(0), _obs(3, worker_alive=False, alive=False)], NOW)
    assert f is not None and f.kind is FindingKind.NODE_LOST and f.ranks == (3,)


def test_hang_limit_adapts_and_is_capped() -> None:
    cfg = HangConfig(timeout_s=60)
    assert hang_limit([0.5] * 10, cfg) == 2.0
    assert hang_limit([2.0] * 10, cfg) == 5.0
    assert hang_limit([30.0] * 10, cfg) == 60.0
    assert hang_limit([], cfg) == 60.0
    assert hang_limit([0.5], cfg, checkpointing=True) == 60.0


def test_hang_names_the_frozen_rank_and_the_collective() -> None:
    waiting = {"0": {"enqueued": 41, "completed": 40, "op": "gloo:all_reduce"}}
    obs = [_obs(0, collectives=waiting), _obs(1, collectives=waiting),
           _obs(2, stopped=True, heartbeat=NOW - 8.0, collectives={"0": {"enqueued": 40, "completed": 40}}),
           _obs(3, collectives=waiting)]
    f = detect_hang(obs, NOW - 9.0, NOW, 5.0)
    assert f is not None and f.kind is FindingKind.HANG
    assert f.ranks == (2,) and f.hosts == ("h1",)
    assert "gloo:all_reduce #41" in f.summary
    assert f.fault_at == NOW - 8.0


def test_a_stopped_rank_is_named_over_a_peer_whose_late_beacon_makes_it_look_behind() -> None:
    """Rank 1 is SIGSTOPped inside all-reduce #41; rank 2's last beacon, written late on a loaded host, still
    shows it before #41. The beacons alone say everyone waits for rank 2; the kernel says rank 1 cannot run."""
    inside = {"0": {"enqueued": 41, "completed": 40, "op": "gloo:all_reduce"}}
    obs = [_obs(0, collectives=inside), _obs(1, stopped=True, heartbeat=NOW - 3.0, collectives=inside),
           _obs(2, heartbeat=NOW - 3.0, collectives={"0": {"enqueued": 40, "completed": 40}}),
           _obs(3, collectives=inside)]
    f = detect_hang(obs, NOW - 4.0, NOW, 1.5)
    assert f is not None and f.ranks == (1,) and f.hosts == ("h0",), f.summary
    assert "rank 1 on host h0 is the culprit: its process is stopped" in f.summary
    assert "the beacons alone pointed at rank 2" in f.summary
    # Without the stop, the same beacons name rank 2.
    obs[1] = _obs(1, heartbeat=NOW - 3.0, collectives=inside)
    f = detect_hang(obs, NOW - 4.0, NOW, 1.5)
    assert f is not None and f.ranks == (2,), f.summary


def test_hang_without_frozen_rank_uses_collective_lag() -> None:
    ahead = {"0": {"enqueued": 12, "completed": 11, "op": "gloo:allgather"}}
    obs = [_obs(0, collectives=ahead), _obs(1, collectives={"0": {"enqueued": 11, "completed": 11}}),
           _obs(2, collectives=ahead), _obs(3, collectives=ahead)]
    f = detect_hang(obs, NOW - 20, NOW, 10.0)
    assert f is not None and f.ranks == (1,) and "lags" in f.summary and "gloo:allgather #12" in f.summary


def test_straggler_is_a_robust_outlier() -> None:
    def ring(delay: float) -> tuple[tuple[int, float], ...]:
        return tuple((s, 100.0 + s * 0.5 + delay + 0.003 * (s % 3)) for s in range(1, 21))

    obs = [_obs(r, ready=ring(0.4 if r == 5 else 0.0)) for r in range(8)]
    found = detect_stragglers(obs, 0.5, NOW)
    assert [f.ranks for f in found] == [(5,)]
    assert found[0].score is not None and found[0].score > 6
    # Jitter alone is not a straggler.
    assert detect_stragglers([_obs(r, ready=ring(0.0)) for r in range(8)], 0.5, NOW) == []


def test_first_cause_prefers_root_causes_and_waits_for_them() -> None:
    from health.detectors import PEER_FAILURE_GRACE_S, first_cause

    peer = detect_crash([_obs(0, alive=False, returncode=1, exited_at=NOW - 0.2)], NOW)
    lost = detect_crash([_obs(3, worker_alive=False, alive=False)], NOW)
    assert peer is not None and lost is not None
    assert first_cause([peer], NOW) is None, "an exit code alone waits for the real cause"
    assert first_cause([peer], NOW + PEER_FAILURE_GRACE_S + 0.1) is peer
    assert first_cause([peer, lost], NOW) is lost
    killed = detect_crash([_obs(1, alive=False, returncode=-9, signal="SIGKILL", exited_at=NOW - 1)], NOW)
    assert first_cause([peer, killed], NOW) is killed


def test_ranks_that_finished_but_exit_slowly_are_no_hang() -> None:
    obs = [_obs(r, phase="done", step=40, heartbeat=NOW - 9.0) for r in range(4)]
    assert detect_hang(obs, NOW - 9.0, NOW, 5.0) is None
    obs[2] = _obs(2, phase="train", step=39, heartbeat=NOW - 0.5)
    f = detect_hang(obs, NOW - 9.0, NOW, 5.0)
    assert f is not None
