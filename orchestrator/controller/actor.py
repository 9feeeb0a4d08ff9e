"""JobController: the per-job Ray actor. It wires the controller to Ray and runs its loop in a thread.

The actor is detached and restarted by Ray if its process dies; the new
incarnation rebuilds its state from the catalog (see `recovery.py`).
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
import time
from pathlib import Path
from typing import Any

from orchestrator.catalog.repository import Catalog
from orchestrator.controller.callbacks import CallbackList
from orchestrator.controller.catalog_writer import CatalogWriter
from orchestrator.controller.controller import Controller
from orchestrator.controller.spares import RaySparePool
from orchestrator.controller.state import ControllerState
from orchestrator.controller.worker_group import RayWorkerGroup
from orchestrator.k8s.callback import callbacks_from_env
from orchestrator.spec import JobSpec, job_checkpoint_dir
from trainer.checkpoint_files import committed_checkpoints

logger = logging.getLogger(__name__)


class WallClock:
    """Real time; sleeping ends early when the job is asked to stop."""

    def __init__(self, wake: threading.Event) -> None:
        self._wake = wake

    def time(self) -> float:
        return time.time()

    def sleep(self, seconds: float) -> None:
        self._wake.wait(seconds)


class FolderCheckpoints:
    """Committed checkpoints as the checkpoint folder shows them."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder

    def committed_step(self) -> int:
        ck = committed_checkpoints(self.folder)
        return ck[-1].step if ck else 0

    def committed(self) -> list[tuple[int, str, int | None]]:
        return [(c.step, str(c.path), c.meta.get("attempt")) for c in committed_checkpoints(self.folder)]


class JobController:
    """Runs one job to its end. Constructed by Ray; the loop starts at once in a thread."""

    def __init__(self, spec: dict[str, Any], db_url: str, run_dir: str) -> None:
        logging.basicConfig(level=logging.INFO)
        self.spec = JobSpec.model_validate(spec)
        self.catalog = Catalog(db_url)
        self._wake = threading.Event()
        self._done = threading.Event()
        clock = WallClock(self._wake)
        self.writer = CatalogWriter(self.catalog, self.spec.name, clock)
        r, rel = self.spec.resources, self.spec.reliability
        rdir = Path(run_dir)
        self.workers = RayWorkerGroup(self.spec.name, run_dir, cpus_per_rank=r.cpus_per_rank,
                                      gpus_per_rank=r.gpus_per_rank, placement=r.placement,
                                      warm_standby=rel.warm_standby, network_interface=r.network_interface)
        ckpt = job_checkpoint_dir(self.spec, rdir)
        others = self._start_metrics(clock, rdir)
        self.controller = Controller(
            self.spec, self.catalog, rdir, ckpt, workers=self.workers,
            spares=RaySparePool(self.spec.name, rel.spares, cpus_per_rank=r.cpus_per_rank,
                                gpus_per_rank=r.gpus_per_rank),
            checkpoints=FolderCheckpoints(ckpt), clock=clock,
            callbacks=CallbackList([self.writer], others=others + callbacks_from_env()))
        threading.Thread(target=self._main, name="controller", daemon=True).start()

    def _start_metrics(self, clock: WallClock, rdir: Path) -> list[Any]:
        """The Prometheus exporter, its URL in the catalog; a job runs on without it if it cannot serve."""
        try:
            import ray

            from orchestrator.metrics.exporter import start_exporter

            exporter, url = start_exporter(self.spec, self.catalog, rdir, clock, ray.util.get_node_ip_address())
        except Exception as e:
            logger.warning("job %s: no metrics exporter: %s: %s", self.spec.name, type(e).__name__, e)
            return []
        self.catalog.update_job(self.spec.name, metrics_url=url)
        logger.info("job %s: metrics at %s", self.spec.name, url)
        return [exporter]

    # ---- actor methods -------------------------------------------------------------------
    def ping(self) -> str:
        return self.controller.state.value

    def pid(self) -> int:
        return os.getpid()

    def stop(self, reason: str = "stopped by the operator") -> str:
        self.controller.request_stop(reason)
        self._wake.set()
        return self.controller.state.value

    def wait(self, timeout_s: float | None = None) -> str:
        self._done.wait(timeout_s)
        return self.controller.state.value

    def worker_handles(self) -> list[Any]:
        return self.workers.handles()

    # ---- the loop ------------------------------------------------------------------------
    def _main(self) -> None:
        try:
            self.controller.run()
        except Exception as e:  # the loop must always leave a terminal state behind
            logger.exception("controller crashed")
            with contextlib.suppress(Exception):
                self.controller.teardown(job_over=False)
            try:
                if not self.controller.state.terminal:
                    self.controller.sm.set(ControllerState.FAILED, f"controller error: {type(e).__name__}: {e}")
            except Exception:
                with contextlib.suppress(Exception):
                    self.writer.state_changed(self.controller.state, ControllerState.FAILED,
                                              f"controller error: {type(e).__name__}: {e}")
        finally:
            with contextlib.suppress(Exception):
                self.controller.teardown()
            self._done.set()
