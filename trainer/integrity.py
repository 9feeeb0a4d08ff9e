"""Training integrity: silent-data-corruption checks across data-parallel replicas, and the loss guard.

SDC check. Under FSDP every rank's parameter shard is unique (the shards of
one replica are spread over the dp×cp ranks), so no two ranks hold the same
parameter bytes to compare. What data-parallel replicas do share is the
computation: after FSDP gathers the parameters, ranks with the same tp, cp
and pp coordinates run the same model on the same tokens. Every K steps each
rank runs a forward pass over a fixed check batch and reduces the logits to a
float64 checksum; the checksums are all-gathered (plain torch.distributed)
within each group of ranks that hold the same shard coordinates. A rank whose
checksum disagrees is re-checked by a replay of the same computation: the
replica named is the one whose first result disagrees with the value most
results (its own replay and the other replicas') agree on, which tells one
faulty replica from a legitimately different model even with only two.

Loss guard. A loss that is NaN or infinite, or that spikes far above its
recent median, is the same on every replica (the loss is all-reduced), so it
is the data or the optimisation, not a host: the trainer rolls back to the
newest committed checkpoint and skips the batches since it.
"""

from __future__ import annotations

import math
import statistics
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.distributed as dist

EXIT_SDC = 86
"""Exit code of a rank named by the SDC check: its host computes wrong results."""
CHECK_RTOL = 1e-6
"""Relative difference between two replicas' checksums still counted as agreement (reduction order)."""
LOSS_WINDOW = 20
MAX_ROLLBACKS = 5


@dataclass(frozen=True, slots=True)
class SdcVerdict:
    ok: bool
    culprits: tuple[int, ...] = ()
    """Positions (in the group) of the replicas that disagree."""
    values: tuple[float, ...] = ()
    replay: tuple[float, ...] = ()
    message: str = ""


def _agree(a: float, b: float) -> bool:
    if math.isnan(a) or math.isnan(b):
        return False
    return abs(a - b) <= CHECK_RTOL * max(abs(a), abs(b), 1e-30)


def all_agree(values: list[float]) -> bool:
    return all(_agree(values[0], v) for v in values[1:])


def judge(values: list[float], replay: list[float]) -> SdcVerdict:
    """Which replicas disagree: those whose first result is off the value most results agree on.

    `values` and `replay` hold each replica's checksum of the check and of its replay, in group order.
    """
    pooled = values + replay
    best, support = None, 0
    for v in pooled:
        n = sum(1 for w in pooled if _agree(v, w))
        if n > support:
            best, support = v, n
    if best is None or support <= len(pooled) // 2:
        return SdcVerdict(False, (), tuple(values), tuple(replay),
                          "replicas disagree and no value is held by a majority of results and replays")
    culprits = tuple(i for i, v in enumerate(values) if not _agree(v, best))
    return SdcVerdict(not culprits, culprits, tuple(values), tuple(replay), "")


def check_replicas(local: Callable[[], float], group: dist.ProcessGroup | None) -> SdcVerdict:
    """All-gather each replica's checksum in `group`; on disagreement, replay once and judge."""
    size = dist.get_world_size(group) if group is not None else 1
    if size < 2:
        return SdcVerdict(True)

    def gathered(v: float) -> list[float]:
        t = torch.tensor([v], dtype=torch.float64)
        out = [torch.zeros(1, dtype=torch.float64) for _ in range(size)]
        dist.all_gather(out, t, group=group)
        return [float(x) for x in out]

    values = gathered(local())
    if all_agree(values):
        return SdcVerdict(True, (), tuple(values))
    replay = gathered(local())
    return judge(values, replay)


class LossGuard:
    """Is a loss fit to keep? NaN/inf always not; a spike above `spike_factor` × the recent median not."""

    def __init__(self, spike_factor: float, window: int = LOSS_WINDOW) -> None:
        self.spike_factor = spike_factor
        self.recent: deque[float] = deque(maxlen=window)

    def bad(self, loss: float) -> str | None:
        if not math.isfinite(loss):
            return f"loss is {loss} (not finite)"
        if self.spike_factor > 0 and len(self.recent) == self.recent.maxlen:
            med = statistics.median(self.recent)
            if med > 0 and loss > self.spike_factor * med:
                return f"loss spiked to {loss:.4g}, over {self.spike_factor:g}x the median {med:.4g} of the last " \
                       f"{len(self.recent)} steps"
        self.recent.append(loss)
        return None

    def reset(self) -> None:
        self.recent.clear()
