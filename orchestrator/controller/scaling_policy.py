"""The scaling policy: before each attempt, which gang runs it and at what data-parallel degree.

Pure: plain views of the nodes, the cordoned hosts, the gang kept from the last
attempt and the spares held come in; a decision comes out (reuse the gang, place
a new one, take a spare's place, shrink or grow data parallelism, or a capacity
error). The worker group and the spare pool carry it out.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

from orchestrator.controller.placement import NodeView, rank_slots
from orchestrator.spec import JobSpec


class ScalingKind(enum.StrEnum):
    REUSE_GANG = "reuse_gang"
    """Restart in place: same reservation, same supervisors (and their warm standbys)."""
    NEW_GANG = "new_gang"
    TAKE_SPARE = "take_spare"
    """A new gang that takes a spare host's place instead of a cordoned or lost one."""
    SHRINK = "shrink"
    GROW = "grow"
    """Back to a larger data-parallel degree (at most the job file's) once capacity returned."""
    CAPACITY_ERROR = "capacity_error"


@dataclass(frozen=True, slots=True)
class GangView:
    """The gang kept from the last attempt, as the worker group sees it."""

    hosts: tuple[str, ...]
    """Host of each rank, in rank order."""
    node_ids: tuple[str, ...]
    answering: bool
    """Every supervisor answered a probe just now."""


@dataclass(frozen=True, slots=True)
class ScalingInput:
    target_dp: int
    """The job file's data-parallel degree."""
    current_dp: int
    model_parallel: int
    """tp * pp * cp: one data-parallel replica's ranks."""
    group: int
    """Ranks that must share a host: one tensor-parallel group."""
    global_batch: int
    micro_batch: int
    cpus_per_rank: float
    gpus_per_rank: float
    allow_shrink_dp: bool
    nodes: tuple[NodeView, ...]
    cordoned: frozenset[str]
    kept: GangView | None = None
    spare_hosts: tuple[str, ...] = ()


    @classmethod
    def of(cls, spec: JobSpec, current_dp: int, **views: object) -> ScalingInput:
        """The job file's part of the input; `views` hold the nodes, cordoned hosts, kept gang and spares."""
        p, t, r = spec.parallelism, spec.training, spec.resources
        return cls(target_dp=p.dp, current_dp=current_dp, model_parallel=p.tp * p.pp * p.cp, group=p.tp,
                   global_batch=t.global_batch_size, micro_batch=t.micro_batch_size, cpus_per_rank=r.cpus_per_rank,
                   gpus_per_rank=r.gpus_per_rank, allow_shrink_dp=spec.reliability.allow_shrink_dp,
                   **views)  # type: ignore[arg-type]


@dataclass(frozen=True, slots=True)
class ScalingDecision:
    kind: ScalingKind
    dp: int
    reason: str
    swap_in: tuple[str, ...] = ()
    """Spare hosts whose place the new gang takes."""

    @property
    def reuse(self) -> bool:
        return self.kind is ScalingKind.REUSE_GANG

    @property
    def place(self) -> bool:
        return self.kind not in (ScalingKind.REUSE_GANG, ScalingKind.CAPACITY_ERROR)


def shrunk_dp(*, dp: int, model_parallel: int, global_batch: int, micro_batch: int, slots: int) -> int | None:
    """The largest data-parallel degree up to `dp` that fits `slots` ranks and divides the batch.

    A data-parallel replica is lost or kept whole. Returns None when not even one replica fits.
    """
    for d in range(dp, 0, -1):
        if d * model_parallel <= slots and global_batch % d == 0 and (global_batch // d) % micro_batch == 0:
            return d
    return None


def _gang_healthy(inp: ScalingInput, kept: GangView) -> str | None:
    """Why the kept gang cannot run the next attempt, or None."""
    alive = {v.node_id for v in inp.nodes if v.alive}
    # Set operations, not Python loops over ranks: a kept gang holds every rank (16,384 at Llama 3 scale).
    bad = sorted(inp.cordoned.intersection(kept.hosts))
    if bad:
        return f"its host{'s' if len(bad) > 1 else ''} {', '.join(bad)} {'are' if len(bad) > 1 else 'is'} cordoned"
    if not alive.issuperset(kept.node_ids):
        return "one of its nodes left the cluster"
    if not kept.answering:
        return "a rank supervisor does not answer"
    if len(kept.hosts) != inp.current_dp * inp.model_parallel:
        return "its size differs from the next attempt's"
    return None


def decide(inp: ScalingInput) -> ScalingDecision:
    """Which gang runs the next attempt."""
    world = inp.current_dp * inp.model_parallel
    # Spares' resources count: their reservations are given back before a new gang is placed.
    slots = rank_slots(list(inp.nodes), set(inp.cordoned), inp.cpus_per_rank, inp.gpus_per_rank,
                       inp.target_dp * inp.model_parallel, inp.group)
    grow = None
    if inp.current_dp < inp.target_dp:
        grow = shrunk_dp(dp=inp.target_dp, model_parallel=inp.model_parallel, global_batch=inp.global_batch,
                         micro_batch=inp.micro_batch, slots=slots)
        if grow is not None and grow <= inp.current_dp:
            grow = None
    why_not = _gang_healthy(inp, inp.kept) if inp.kept is not None else "no gang is kept"
    if why_not is None and grow is None:
        return ScalingDecision(ScalingKind.REUSE_GANG, inp.current_dp,
                               f"every host of the gang is healthy: restarting in place on {world} ranks")
    if grow is not None:
        return ScalingDecision(ScalingKind.GROW, grow, f"capacity for {grow * inp.model_parallel} ranks is back: "
                               f"growing data parallelism from {inp.current_dp} to {grow}")
    if slots >= world:
        lost = inp.kept is not None and why_not is not None and why_not != "no gang is kept"
        if lost and inp.spare_hosts:
            return ScalingDecision(ScalingKind.TAKE_SPARE, inp.current_dp,
                                   f"the gang cannot be reused ({why_not}): a new gang of {world} ranks takes "
                                   f"the place of spare host{'s' if len(inp.spare_hosts) > 1 else ''} "
                                   f"{', '.join(inp.spare_hosts)}", swap_in=inp.spare_hosts)
        return ScalingDecision(ScalingKind.NEW_GANG, inp.current_dp, f"placing a new gang of {world} ranks"
                               + (f" ({why_not})" if inp.kept is not None else ""))
    usable = [v for v in inp.nodes if v.alive and v.host not in inp.cordoned]
    per_group = f" in tensor-parallel groups of {inp.group} on one host each" if inp.group > 1 else ""
    shortage = (f"{world} ranks x ({inp.cpus_per_rank:g} CPU, {inp.gpus_per_rank:g} GPU){per_group} do not fit "
                f"the cluster: "
                f"{len(usable)} usable nodes"
                + (f" ({len(inp.cordoned & {v.host for v in inp.nodes})} cordoned)" if inp.cordoned else "")
                + f" hold {slots} rank slots")
    if inp.allow_shrink_dp:
        dp = shrunk_dp(dp=inp.current_dp - 1, model_parallel=inp.model_parallel, global_batch=inp.global_batch,
                       micro_batch=inp.micro_batch, slots=slots) if inp.current_dp > 1 else None
        if dp is not None:
            return ScalingDecision(ScalingKind.SHRINK, dp, f"{shortage}: shrinking data parallelism from "
                                   f"{inp.current_dp} to {dp} (reliability.allow_shrink_dp=true)")
        return ScalingDecision(ScalingKind.CAPACITY_ERROR, inp.current_dp,
                               f"{shortage}, and not even one data-parallel replica of {inp.model_parallel} "
                               f"ranks fits")
    return ScalingDecision(ScalingKind.CAPACITY_ERROR, inp.current_dp,
                           f"{shortage} (reliability.allow_shrink_dp is off)")
