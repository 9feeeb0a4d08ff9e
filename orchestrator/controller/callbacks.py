"""Controller callbacks: everything the controller's decisions cause outside the job.

The controller calls these hooks and nothing else to make its work visible: the
catalog writer is the first callback, the metrics exporter and Kubernetes node
remediation are others. A callback that raises is logged and does not stop the
job (the catalog writer is the exception: the catalog is the source of truth,
and the controller fails loudly if it cannot be written).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

from health.observations import Finding
from orchestrator.controller.monitor import Progress
from orchestrator.controller.state import ControllerState

logger = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class RankPlacement:
    rank: int
    host: str
    node_id: str
    address: str = ""


@dataclass(frozen=True, slots=True)
class RankEnd:
    rank: int
    exit_code: int | None
    signal: str | None
    ended_at: float


@dataclass(frozen=True, slots=True)
class HostAction:
    """A host state the controller decided on (cordoned, suspect), with why."""

    host: str
    state: str
    reason: str


@dataclass(frozen=True, slots=True)
class InterruptionRecord:
    """One interruption as the catalog keeps it: the structured record of a failure decision."""

    job: str
    attempt: int
    planned: bool
    kind: str
    """What was observed: crash, hang, node_lost, operator_stop, ..."""
    category: str
    component: str
    confidence: float
    explanation: str
    decision: str
    """What the controller decided and why (the failure policy's sentence)."""
    ranks: tuple[int, ...] = ()
    hosts: tuple[str, ...] = ()
    gpus: tuple[Any, ...] = ()
    evidence: dict[str, Any] = field(default_factory=dict)
    evidence_text: str | None = None
    fault_at: float | None = None
    detected_at: float | None = None
    stopped_at: float | None = None
    step_at_fault: int | None = None
    resume_step: int | None = None
    steps_lost: int | None = None
    host_actions: tuple[HostAction, ...] = ()
    resumed_at: float | None = None
    """Set for an interruption handled in place (a loss rollback): it is over when recorded."""


class ControllerCallback:
    """Hooks with empty defaults; override the ones you need."""

    def state_changed(self, old: ControllerState, new: ControllerState, reason: str | None) -> None: ...

    def heartbeat(self, now: float) -> None: ...

    def attempt_started(self, number: int, start_step: int, layout: dict[str, Any]) -> None: ...

    def layout_changed(self, number: int, layout: dict[str, Any]) -> None: ...

    def ranks_placed(self, number: int, placements: list[RankPlacement]) -> None: ...

    def ranks_started(self, number: int, pids: dict[int, int | None], log_paths: dict[int, str]) -> None: ...

    def progressed(self, number: int, progress: Progress, now: float) -> None: ...

    def checkpoint_committed(self, number: int, checkpoint: dict[str, Any]) -> None: ...

    def checkpoint_failed(self, number: int, failure: dict[str, Any]) -> None:
        """A save failed and training went on (`failure`: step, error, failures, consecutive, host, verdict)."""

    def straggler_found(self, number: int, finding: Finding, step: int) -> None: ...

    def attempt_ended(self, number: int, state: str, reason: str, ends: list[RankEnd], now: float) -> None: ...

    def interrupted(self, record: InterruptionRecord) -> None: ...


class CallbackList(ControllerCallback):
    """Fans each hook out to several callbacks; `strict` ones may raise, the others are logged."""

    def __init__(self, strict: list[ControllerCallback], others: list[ControllerCallback] | None = None) -> None:
        self.strict = list(strict)
        self.others = list(others or [])

    def __getattribute__(self, name: str) -> Any:
        if name.startswith("_") or name not in ControllerCallback.__dict__:
            return object.__getattribute__(self, name)

        def fan_out(*args: Any, **kwargs: Any) -> None:
            for cb in object.__getattribute__(self, "strict"):
                getattr(cb, name)(*args, **kwargs)
            for cb in object.__getattribute__(self, "others"):
                try:
                    getattr(cb, name)(*args, **kwargs)
                except Exception:
                    logger.exception("callback %s.%s failed", type(cb).__name__, name)

        return fan_out
