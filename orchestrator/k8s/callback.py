"""The controller callback that carries a cordon over to the host's Kubernetes node.

Off unless `ORCHESTRATOR_K8S_REMEDIATION=1` (the Helm chart sets it on the
head pod, where controllers run, with a service account allowed to patch nodes).
A node the API server would not change stays queued and is tried again on the
controller's heartbeats, so a short API outage delays the taint, never loses it.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass

from orchestrator.controller.callbacks import ControllerCallback, InterruptionRecord
from orchestrator.k8s.nodes import NodeRemediator, RemediationError

logger = logging.getLogger(__name__)

ENV_FLAG = "ORCHESTRATOR_K8S_REMEDIATION"
RETRY_INTERVAL_S = 30.0


def enabled(environ: dict[str, str] | None = None) -> bool:
    env = os.environ if environ is None else environ
    return env.get(ENV_FLAG, "").strip().lower() in {"1", "true", "yes", "on"}


@dataclass(frozen=True, slots=True)
class PendingCordon:
    category: str
    reason: str
    interruption: str


class NodeRemediationCallback(ControllerCallback):
    """Cordons, taints and labels the node of every host an interruption cordons (suspect hosts are left alone)."""

    def __init__(self, remediator: NodeRemediator, *, retry_interval_s: float = RETRY_INTERVAL_S) -> None:
        self.remediator = remediator
        self.retry_interval_s = retry_interval_s
        self.pending: dict[str, PendingCordon] = {}
        self._next_try = 0.0

    def interrupted(self, record: InterruptionRecord) -> None:
        for a in record.host_actions:
            if a.state == "cordoned":
                self.pending[a.host] = PendingCordon(
                    record.category, a.reason, f"job {record.job} attempt {record.attempt} {record.kind}")
        self.flush()

    def heartbeat(self, now: float) -> None:
        if self.pending and now >= self._next_try:
            self._next_try = now + self.retry_interval_s
            self.flush()

    def flush(self) -> None:
        """Try every queued node once; what fails stays queued, with one log line."""
        for host, p in list(self.pending.items()):
            try:
                out = self.remediator.cordon(host, category=p.category, reason=p.reason, interruption=p.interruption)
            except RemediationError as e:
                logger.error("%s", e)
                continue
            del self.pending[host]
            logger.info("kubernetes node %s cordoned and tainted (%s)%s", host, p.category,
                        f", event {out.event}" if out.event else "")


def callbacks_from_env() -> list[ControllerCallback]:
    """The remediation callback when the environment turns it on, else none."""
    if not enabled():
        return []
    try:
        return [NodeRemediationCallback(NodeRemediator.from_environment())]
    except RemediationError as e:
        logger.error("%s; kubernetes nodes will not be cordoned", e)
        return []
