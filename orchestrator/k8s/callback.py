"""The controller callback that carries a cordon over to the host's Kubernetes node.

Off unless `ORCHESTRATOR_K8S_REMEDIATION=1` (the Helm chart sets it on the head
pod, where controllers run, with a service account allowed to patch nodes).
The API calls run in the callback's own thread: the controller hands the
cordon over and goes on restarting the job, whatever the API server does. A
node the API server would not change stays queued and is tried again every
`retry_interval_s`, so an API outage delays the taint, never loses it.
"""

from __future__ import annotations

import logging
import os
import threading
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

    def __init__(self, remediator: NodeRemediator, *, retry_interval_s: float = RETRY_INTERVAL_S,
                 background: bool = True) -> None:
        self.remediator = remediator
        self.retry_interval_s = retry_interval_s
        self._pending: dict[str, PendingCordon] = {}
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._idle = threading.Event()
        self._idle.set()
        if background:
            threading.Thread(target=self._run, name="k8s-remediation", daemon=True).start()

    @property
    def pending(self) -> dict[str, PendingCordon]:
        with self._lock:
            return dict(self._pending)

    def interrupted(self, record: InterruptionRecord) -> None:
        wanted = {a.host: PendingCordon(record.category, a.reason,
                                        f"job {record.job} attempt {record.attempt} {record.kind}")
                  for a in record.host_actions if a.state == "cordoned"}
        if not wanted:
            return
        with self._lock:
            self._pending.update(wanted)
            self._idle.clear()
        self._wake.set()

    def wait_idle(self, timeout_s: float) -> bool:
        """True once nothing is queued (for tests and a clean shutdown)."""
        return self._idle.wait(timeout_s)

    def flush(self) -> None:
        """Try every queued node once; what fails stays queued, with one log line."""
        for host, p in self.pending.items():
            try:
                out = self.remediator.cordon(host, category=p.category, reason=p.reason, interruption=p.interruption)
            except RemediationError as e:
                logger.error("%s", e)
                continue
            with self._lock:
                if self._pending.get(host) == p:  # not replaced by a newer cordon meanwhile
                    del self._pending[host]
            logger.info("kubernetes node %s cordoned and tainted (%s)%s", host, p.category,
                        f", event {out.event}" if out.event else "")
        with self._lock:
            if not self._pending:
                self._idle.set()

    def _run(self) -> None:
        while True:
            self._wake.wait(self.retry_interval_s)
            self._wake.clear()
            if self.pending:
                try:
                    self.flush()
                except Exception:  # a bug here must not end the thread that retries
                    logger.exception("kubernetes node remediation failed")


def callbacks_from_env() -> list[ControllerCallback]:
    """The remediation callback when the environment turns it on, else none."""
    if not enabled():
        return []
    try:
        return [NodeRemediationCallback(NodeRemediator.from_environment())]
    except RemediationError as e:
        logger.error("%s; kubernetes nodes will not be cordoned", e)
        return []
