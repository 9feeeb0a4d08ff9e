"""Hosts and placement: which Ray nodes a job may use, and the gang reservation.

A host is a Ray node. Its name is the node's `host` label when set (Helm sets
it to the Kubernetes node name; tests that start several Ray nodes on one
machine set it per node), else its hostname, made unique with the node id when
several Ray nodes share a hostname.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from typing import Any

HOST_LABEL = "host"
NODE_ID_LABEL = "ray.io/node-id"


@dataclass(frozen=True, slots=True)
class NodeView:
    node_id: str
    host: str
    address: str
    alive: bool
    cpus: float
    gpus: float


def node_views(nodes: list[dict[str, Any]]) -> list[NodeView]:
    """Host names for the entries of `ray.nodes()`."""
    alive = [n for n in nodes if n.get("Alive")]
    counts = Counter(n.get("NodeManagerHostname", "") for n in alive if not _label(n))
    out = []
    for n in nodes:
        host = _label(n)
        if not host:
            host = n.get("NodeManagerHostname", "") or n["NodeID"][:12]
            if counts[host] > 1:
                host = f"{host}-{n['NodeID'][:8]}"
        res = n.get("Resources", {})
        out.append(NodeView(node_id=n["NodeID"], host=host, address=n.get("NodeManagerAddress", ""),
                            alive=bool(n.get("Alive")), cpus=float(res.get("CPU", 0)),
                            gpus=float(res.get("GPU", 0))))
    return out


def _label(n: dict[str, Any]) -> str:
    return (n.get("Labels") or {}).get(HOST_LABEL, "")


def usable_nodes(views: list[NodeView], cordoned: set[str]) -> list[NodeView]:
    return [v for v in views if v.alive and v.host not in cordoned]


def bundles(count: int, cpus: float, gpus: float) -> list[dict[str, float]]:
    b: dict[str, float] = {"CPU": cpus}
    if gpus:
        b["GPU"] = gpus
    return [dict(b) for _ in range(count)]


def group_bundles(world_size: int, group: int, cpus: float, gpus: float) -> list[dict[str, float]]:
    """One bundle per tensor-parallel group: Ray puts a bundle on one node, so no TP group spans hosts.

    Rank r lives in bundle r // group: ranks are numbered host-major in the mesh's order
    (TP innermost), so TP groups stay inside a host and PP stages and DP replicas go across.
    """
    return bundles(world_size // group, cpus * group, gpus * group)


def exclusion_selector(views: list[NodeView], cordoned: set[str]) -> dict[str, str] | None:
    """Label selector that keeps bundles off cordoned (or dead) nodes."""
    bad = sorted(v.node_id for v in views if v.host in cordoned)
    return {NODE_ID_LABEL: f"!in({','.join(bad)})"} if bad else None


def rank_slots(views: list[NodeView], cordoned: set[str], cpus: float, gpus: float, cap: int,
               group: int = 1) -> int:
    """How many ranks of (cpus, gpus) the usable nodes can hold in whole groups of `group` (at most `cap`)."""
    slots = 0
    for v in usable_nodes(views, cordoned):
        by_cpu = int(v.cpus // (cpus * group) + 1e-9) if cpus else cap
        by_gpu = int(v.gpus // (gpus * group) + 1e-9) if gpus else cap
        slots += min(by_cpu, by_gpu) * group
    return min(slots, cap)


def capacity_error(views: list[NodeView], cordoned: set[str], world_size: int, cpus: float,
                   gpus: float, group: int = 1) -> str | None:
    """Why `world_size` ranks, in groups of `group` per host, cannot fit the usable nodes, or None."""
    usable = usable_nodes(views, cordoned)
    slots = rank_slots(views, cordoned, cpus, gpus, world_size, group)
    if slots >= world_size:
        return None
    excluded = f" ({len(cordoned & {v.host for v in views})} cordoned)" if cordoned else ""
    per_group = f" in tensor-parallel groups of {group} on one host each" if group > 1 else ""
    return (f"{world_size} ranks x ({cpus:g} CPU, {gpus:g} GPU){per_group} do not fit the cluster: "
            f"{len(usable)} usable nodes{excluded} hold {slots} rank slots")


HEAD_RESOURCE = "node:__internal_head__"


def controller_node(nodes: list[dict[str, Any]], driver_node_id: str) -> str:
    """Where a job's controller runs: the head node when it shares the submitting machine, else that machine.

    The controller needs the state folder the submitter sees, so it stays on the
    submitter's machine; among that machine's Ray nodes the head is preferred,
    because the head carries no ranks in a real cluster and its loss ends the
    cluster anyway, while a worker node may be lost with the job still running.
    """
    alive = [n for n in nodes if n.get("Alive")]
    driver = next((n for n in alive if n["NodeID"] == driver_node_id), None)
    if driver is None:
        return driver_node_id
    for n in alive:
        if HEAD_RESOURCE in n.get("Resources", {}) and n.get("NodeManagerAddress") == driver.get("NodeManagerAddress"):
            return n["NodeID"]
    return driver_node_id


def controller_scheduling(preferred_node: str) -> dict[str, Any]:
    """Actor options that put the controller on `preferred_node` while it lives, else on any node.

    A label selector on the node id with a fallback selector. Measured with Ray 2.60 on three
    namespace hosts (tests/e2e/test_netns_hosts.py): the selector put 18 of 18 zero-CPU actors on
    the preferred node, a soft NodeAffinity 1, 2 and 5 of 6 in three runs; with the preferred host
    dead, a detached actor with these options came back on another node. A hard NodeAffinity would
    leave a controller whose node died waiting forever.
    """
    return {"label_selector": {NODE_ID_LABEL: preferred_node},
            "fallback_strategy": [{"label_selector": {NODE_ID_LABEL: f"!in({preferred_node})"}}]}
