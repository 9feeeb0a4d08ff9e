"""The client side of a job's controller: its name, starting it, stopping it, a rank's handle.

Imports neither torch nor the trainer (only `start` loads the controller's
code), so `stop`, `chaos` and `status` stay quick.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

NAMESPACE = "orchestrator"
CALL_TIMEOUT_S = 30.0


def controller_name(job: str) -> str:
    return f"controller:{job}"


def start(spec: Any, db_url: str, run_dir: Path) -> Any:
    """Start the job's controller (a detached actor), replacing a dead one of the same name."""
    import ray

    from orchestrator.controller.actor import JobController
    from orchestrator.controller.placement import controller_node, controller_scheduling

    name = controller_name(spec.name)
    try:
        ray.kill(ray.get_actor(name, namespace=NAMESPACE), no_restart=True)
    except ValueError:
        pass
    here = controller_node(ray.nodes(), ray.get_runtime_context().get_node_id())
    actor = ray.remote(JobController).options(
        name=name, namespace=NAMESPACE, lifetime="detached", num_cpus=0, max_concurrency=16,
        max_restarts=3, **controller_scheduling(here),
    )
    return actor.remote(spec.model_dump(mode="json", by_alias=True), db_url, str(run_dir))


def handle(job: str) -> Any:
    """The running controller of `job` (ValueError when there is none)."""
    import ray

    return ray.get_actor(controller_name(job), namespace=NAMESPACE)


def stop(job: str, reason: str, *, wait_s: float | None) -> str:
    import ray

    ctrl = handle(job)
    state = ray.get(ctrl.stop.remote(reason), timeout=CALL_TIMEOUT_S)
    if wait_s:
        state = ray.get(ctrl.wait.remote(wait_s), timeout=wait_s + CALL_TIMEOUT_S)
    return state


def rank_handles(job: str) -> list[Any]:
    """The rank supervisors of the job's current attempt, in rank order."""
    import ray

    return ray.get(handle(job).worker_handles.remote(), timeout=CALL_TIMEOUT_S)
