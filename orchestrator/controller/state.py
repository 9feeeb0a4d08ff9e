"""The controller's states and the transitions allowed between them.

One place changes the state (`StateMachine.set`): it checks the transition and
tells every callback, so the catalog, the metrics and anything else see each
change exactly once. An illegal transition is a bug and raises.
"""

from __future__ import annotations

import enum
from collections.abc import Callable


class ControllerState(enum.StrEnum):
    PENDING = "pending"
    """Constructed; adopting what an earlier controller of the job left behind."""
    PLACING = "placing"
    """Choosing and reserving the gang, starting the ranks."""
    RUNNING = "running"
    RESTARTING = "restarting"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    STOPPED = "stopped"

    @property
    def terminal(self) -> bool:
        return self in (ControllerState.SUCCEEDED, ControllerState.FAILED, ControllerState.STOPPED)


TRANSITIONS: dict[ControllerState, frozenset[ControllerState]] = {
    ControllerState.PENDING: frozenset({ControllerState.PLACING, ControllerState.RESTARTING, ControllerState.STOPPED,
                                        ControllerState.FAILED}),
    ControllerState.PLACING: frozenset({ControllerState.RUNNING, ControllerState.RESTARTING,
                                        ControllerState.FAILED, ControllerState.STOPPED}),
    ControllerState.RUNNING: frozenset({ControllerState.RESTARTING, ControllerState.SUCCEEDED,
                                        ControllerState.FAILED, ControllerState.STOPPED}),
    ControllerState.RESTARTING: frozenset({ControllerState.PLACING, ControllerState.FAILED,
                                           ControllerState.STOPPED}),
}


class InvalidTransition(RuntimeError):
    """A transition the state machine does not allow (a bug in the controller)."""


class StateMachine:
    def __init__(self, on_change: Callable[[ControllerState, ControllerState, str | None], None]) -> None:
        self.state = ControllerState.PENDING
        self._on_change = on_change

    def set(self, new: ControllerState, reason: str | None = None) -> None:
        old = self.state
        if new == old:
            return
        if new not in TRANSITIONS.get(old, frozenset()):
            raise InvalidTransition(f"{old.value} -> {new.value}")
        self.state = new
        self._on_change(old, new, reason)
