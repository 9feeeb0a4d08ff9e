"""The spare pool: hosts held aside for the job, each a placement group of one host's share of ranks.

Spares are requested without waiting: a spare is held once Ray places it, which
may be later, when a host is repaired or added. One request is outstanding at a
time, each off the gang's nodes, the cordoned hosts and the spares already held,
so that every spare is a host of its own. Before a new gang is placed the pool
gives its reservations back (that is the swap: the gang may take their place),
and spares are held again from what is left once the gang is placed.
"""

from __future__ import annotations

import contextlib
import logging
from dataclasses import dataclass
from typing import Any

import ray
from ray.util.placement_group import placement_group, placement_group_table, remove_placement_group

from orchestrator.controller.callbacks import RankPlacement
from orchestrator.controller.placement import NODE_ID_LABEL, NodeView, bundles

logger = logging.getLogger(__name__)


@dataclass(slots=True)
class Spare:
    pg: Any
    ready_ref: Any
    host: str | None = None
    node_id: str | None = None


class RaySparePool:
    def __init__(self, job: str, count: int, *, cpus_per_rank: float, gpus_per_rank: float) -> None:
        self.job, self.count = job, count
        self.cpus, self.gpus = cpus_per_rank, gpus_per_rank
        self._spares: list[Spare] = []
        self._per_host = 1
        self._excluded: set[str] = set()

    def held(self) -> list[str]:
        return [s.host for s in self._spares if s.host is not None]

    def reserve(self, per_host: int, exclude_node_ids: set[str]) -> None:
        """Start holding `count` spares of `per_host` rank slots each, off `exclude_node_ids`."""
        self._per_host, self._excluded = per_host, set(exclude_node_ids)
        self._request()
        self.poll()

    def _request(self) -> None:
        if len(self._spares) >= self.count or any(s.host is None for s in self._spares):
            return
        n = self._per_host
        bad = sorted(self._excluded | {s.node_id for s in self._spares if s.node_id})
        pg = placement_group(bundles(n, self.cpus, self.gpus), strategy="STRICT_PACK",
                             bundle_label_selector=[{NODE_ID_LABEL: f"!in({','.join(bad)})"}] * n if bad else None)
        self._spares.append(Spare(pg, pg.ready()))

    def poll(self) -> bool:
        """Note a spare Ray placed since the last look (no waiting); True when one was."""
        pending = [s for s in self._spares if s.host is None]
        if not pending:
            return False
        ready, _ = ray.wait([pending[0].ready_ref], timeout=0)
        if not ready:
            return False
        spare = pending[0]
        spare.node_id = placement_group_table(spare.pg)["bundles_to_node_id"][0]
        view = {v.node_id: v for v in _views()}.get(spare.node_id)
        spare.host = view.host if view else spare.node_id[:12]
        logger.info("job %s: spare host %s held", self.job, spare.host)
        self._request()
        return True

    def release_all(self) -> None:
        for spare in self._spares:
            with contextlib.suppress(Exception):
                remove_placement_group(spare.pg)
        self._spares.clear()


def spare_shape(placements: list[RankPlacement], ranks_per_node: int | None, nodes: list[NodeView],
                cordoned: set[str]) -> tuple[int, set[str]]:
    """(rank slots per spare, node ids a spare must not use): one host's share, off the gang and bad hosts."""
    per_node: dict[str, int] = {}
    for pl in placements:
        per_node[pl.node_id] = per_node.get(pl.node_id, 0) + 1
    bad = {v.node_id for v in nodes if v.host in cordoned or not v.alive}
    return ranks_per_node or max(per_node.values()), set(per_node) | bad


def _views() -> list[NodeView]:
    from orchestrator.controller.placement import node_views

    return node_views(ray.nodes())
