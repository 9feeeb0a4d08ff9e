from __future__ import annotations

from orchestrator.controller.placement import NodeView
from orchestrator.controller.scaling_policy import GangView, ScalingInput, ScalingKind, decide, shrunk_dp


def nodes(n: int, cpus: float = 2, dead: tuple[str, ...] = ()) -> tuple[NodeView, ...]:
    return tuple(NodeView(f"n{i}", f"h{i}", "", f"h{i}" not in dead, cpus, 0) for i in range(n))


def inp(**kw) -> ScalingInput:
    base = dict(target_dp=4, current_dp=4, model_parallel=1, group=1, global_batch=8, micro_batch=2, cpus_per_rank=1,
                gpus_per_rank=0, allow_shrink_dp=False, nodes=nodes(3), cordoned=frozenset())
    base.update(kw)
    return ScalingInput(**base)


GANG = GangView(("h0", "h0", "h1", "h1"), ("n0", "n0", "n1", "n1"), True)


def test_healthy_gang_is_reused() -> None:
    assert decide(inp(kept=GANG)).kind is ScalingKind.REUSE_GANG


def test_gang_with_a_cordoned_host_is_replaced_by_a_spare() -> None:
    d = decide(inp(kept=GANG, cordoned=frozenset({"h1"}), spare_hosts=("h2",)))
    assert d.kind is ScalingKind.TAKE_SPARE and d.dp == 4 and d.swap_in == ("h2",)


def test_gang_whose_supervisor_does_not_answer_is_replaced() -> None:
    d = decide(inp(kept=GangView(GANG.hosts, GANG.node_ids, answering=False)))
    assert d.kind is ScalingKind.NEW_GANG and "does not answer" in d.reason


def test_shrink_keeps_whole_replicas_and_the_batch() -> None:
    d = decide(inp(kept=GANG, cordoned=frozenset({"h1", "h2"}), allow_shrink_dp=True))
    assert d.kind is ScalingKind.SHRINK and d.dp == 2
    assert shrunk_dp(dp=3, model_parallel=2, global_batch=8, micro_batch=2, slots=7) == 2
    assert shrunk_dp(dp=4, model_parallel=4, global_batch=8, micro_batch=2, slots=3) is None


def test_capacity_error_names_the_shortage_and_the_setting() -> None:
    d = decide(inp(kept=GANG, cordoned=frozenset({"h1", "h2"})))
    assert d.kind is ScalingKind.CAPACITY_ERROR
    assert "hold 2 rank slots" in d.reason and "allow_shrink_dp is off" in d.reason


def test_data_parallelism_grows_back_when_capacity_returns() -> None:
    small = GangView(("h0", "h0"), ("n0", "n0"), True)
    d = decide(inp(current_dp=2, kept=small, allow_shrink_dp=True))
    assert d.kind is ScalingKind.GROW and d.dp == 4
    assert decide(inp(current_dp=2, kept=small, nodes=nodes(1))).kind is ScalingKind.REUSE_GANG
