"""Host naming, capacity and where the controller runs, over `ray.nodes()`-shaped data."""

from __future__ import annotations

from typing import Any

from orchestrator.controller.placement import (
    capacity_error,
    controller_node,
    exclusion_selector,
    node_views,
    rank_slots,
)


def node(node_id: str, host: str | None, *, addr: str = "10.0.0.1", cpus: float = 2, gpus: float = 0,
         head: bool = False, alive: bool = True) -> dict[str, Any]:
    res: dict[str, float] = {"CPU": cpus, **({"GPU": gpus} if gpus else {})}
    if head:
        res["node:__internal_head__"] = 1.0
    return {"NodeID": node_id, "Alive": alive, "NodeManagerAddress": addr, "NodeManagerHostname": "box",
            "Resources": res, "Labels": {"host": host} if host else {}}


def test_hosts_are_labels_or_unique_hostnames() -> None:
    views = node_views([node("a" * 16, "gpu-1"), node("b" * 16, None), node("c" * 16, None)])
    assert views[0].host == "gpu-1"
    # Two unlabelled nodes on one hostname stay distinct.
    assert views[1].host != views[2].host and views[1].host.startswith("box-")


def test_capacity_counts_only_usable_nodes() -> None:
    views = node_views([node("a", "h1", cpus=4), node("b", "h2", cpus=4), node("c", "h3", cpus=4, alive=False)])
    assert capacity_error(views, set(), 8, 1, 0) is None
    err = capacity_error(views, {"h2"}, 8, 1, 0)
    assert err is not None and "1 usable nodes" in err and "4 rank slots" in err
    assert rank_slots(views, {"h2"}, 1, 0, cap=8) == 4
    # GPUs bound the slots when ranks need them.
    gpu = node_views([node("g", "h4", cpus=64, gpus=8)])
    assert rank_slots(gpu, set(), 1, 1, cap=100) == 8
    assert exclusion_selector(views, {"h2"}) == {"ray.io/node-id": "!in(b)"}
    assert exclusion_selector(views, set()) is None


def test_controller_prefers_the_head_on_the_submitters_machine() -> None:
    nodes = [node("head", "node-a", head=True), node("w1", "node-b"), node("w2", "node-c", addr="10.0.0.2")]
    # Driver attached to a worker raylet on the head's machine: the head is chosen.
    assert controller_node(nodes, "w1") == "head"
    # Driver on another machine: the controller stays with it (it needs the state folder).
    assert controller_node(nodes, "w2") == "w2"
    # A dead head is never chosen.
    nodes[0]["Alive"] = False
    assert controller_node(nodes, "w1") == "w1"
    assert controller_node(nodes, "unknown") == "unknown"


def test_rank_interface_is_the_one_holding_the_node_address() -> None:
    from orchestrator.controller.worker import interface_of

    assert interface_of("127.0.0.1") == "lo"
    assert interface_of("203.0.113.254") is None  # TEST-NET-3: held by no interface here


def test_tensor_parallel_groups_never_span_hosts() -> None:
    from orchestrator.controller.placement import NodeView, group_bundles

    three = [NodeView(f"n{i}", f"h{i}", "", True, 3, 0) for i in range(3)]
    # Hosts of 3 slots hold one TP group of 2 each: 6 ranks of tp=2 fit, 8 do not.
    assert rank_slots(three, set(), 1, 0, cap=100, group=2) == 6
    assert capacity_error(three, set(), 6, 1, 0, group=2) is None
    err = capacity_error(three, set(), 8, 1, 0, group=2)
    assert err is not None and "tensor-parallel groups of 2" in err and "hold 6 rank slots" in err
    assert group_bundles(6, 2, 1, 0) == [{"CPU": 2}] * 3
    assert group_bundles(8, 8, 1, 1) == [{"CPU": 8, "GPU": 8}]
