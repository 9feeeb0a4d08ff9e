"""The controller at Llama 3 scale, in one process: 2,048 node reports (16,384 ranks) a second.

`python bench/controller_load.py --seconds 20`: the real `Controller` (monitor
tick, detectors, callbacks, CatalogWriter on a SQLite file, failure and scaling
policies) over a fake worker group of 2,048 hosts x 8 ranks. Each simulated
second the worker group hands the controller one report per node agent, each
unpickled from bytes as a Ray call would deliver it (8 RankObservations with
beacon fields: step, step time, collective sequences, readiness ring,
checkpoint), so deserialization counts as controller work; Ray's per-call RPC
cost is not included. Measured: controller CPU per simulated second in steady
state, then the CPU and wall time from the poll carrying a crash to the
failure decision, and the catalog writes of a restart at this size (placement,
start, end of an attempt: one transaction each, 16,384 rank rows).
"""

from __future__ import annotations

import argparse
import os
import pickle
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import median, save  # noqa: E402
from health.detectors import detect_crash  # noqa: E402
from health.observations import Finding, RankObservation  # noqa: E402
from health.probes.base import ProbeResult, Severity  # noqa: E402
from orchestrator.catalog.repository import Catalog  # noqa: E402
from orchestrator.controller.callbacks import CallbackList, RankEnd, RankPlacement  # noqa: E402
from orchestrator.controller.catalog_writer import CatalogWriter  # noqa: E402
from orchestrator.controller.controller import Controller  # noqa: E402
from orchestrator.controller.placement import NodeView  # noqa: E402
from orchestrator.controller.preflight import PreflightReport  # noqa: E402
from orchestrator.controller.scaling_policy import GangView  # noqa: E402
from orchestrator.controller.state import ControllerState  # noqa: E402
from orchestrator.spec import JobSpec  # noqa: E402
from tests.controller_fakes import FakeCheckpoints, FakeClock, FakeSpares  # noqa: E402

HOSTS, GPUS = int(os.environ.get("LOAD_HOSTS", "2048")), 8
XID79 = ("Mar  3 04:12:01 {host} kernel: NVRM: Xid (PCI:0000:18:00): 79, pid=4242, GPU has fallen off the bus.\n"
         "[rank{rank}]: RuntimeError: CUDA error: unspecified launch failure")


class AgentReports:
    """2,048 node agents' reports, pickled per node as Ray would carry them; one step further each second."""

    def __init__(self, clock: FakeClock, checkpoints: FakeCheckpoints) -> None:
        self.clock, self.checkpoints = clock, checkpoints
        self.hosts = [f"node-{i:05d}" for i in range(HOSTS)]
        self.step = 0
        self.crash_rank: int | None = None
        self.placements = [RankPlacement(h * GPUS + g, self.hosts[h], f"id-{self.hosts[h]}")
                           for h in range(HOSTS) for g in range(GPUS)]
        self.report_bytes = 0

    def _obs(self, rank: int, host: str, now: float) -> RankObservation:
        s = self.step
        crashed = rank == self.crash_rank
        return RankObservation(
            rank=rank, host=host, observed_at=now, alive=not crashed, returncode=1 if crashed else None,
            exited_at=now - 0.5 if crashed else None, step=s, step_seconds=1.0, heartbeat=now - 0.2,
            collectives={"dp": {"enqueued": 40 * s + 3, "completed": 40 * s + 3, "op": "reduce_scatter"},
                         "tp": {"enqueued": 120 * s, "completed": 120 * s, "op": "all_reduce"},
                         "pp": {"enqueued": 64 * s, "completed": 64 * s, "op": "send"}},
            ready=tuple((x, now - (s - x) - 0.9) for x in range(max(0, s - 31), s + 1)),
            phase="train", loss=2.0, tokens_per_second=2.7e6,
            checkpoint={"checkpoint_step": self.checkpoints.committed_step(),
                        "checkpoint_path": f"/ckpt/step-{self.checkpoints.committed_step():08d}",
                        "checkpoint_blocked_s": 0.8, "checkpoint_seconds": 30.0})

    def pickled(self) -> list[bytes]:
        now = self.clock.now
        out = []
        for h, host in enumerate(self.hosts):
            obs = [self._obs(h * GPUS + g, host, now) for g in range(GPUS)]
            crash = detect_crash(obs, now)
            rep = {"host": host, "observations": obs, "findings": [crash] if crash else [], "time": now}
            out.append(pickle.dumps(rep, protocol=5))
        self.report_bytes = sum(len(b) for b in out)
        return out


class WorkerGroup:
    """The worker group the controller drives: reports come in as bytes and are unpickled on poll."""

    def __init__(self, agents: AgentReports) -> None:
        self.agents = agents
        self.next_reports: list[bytes] = []
        self.placed = False

    def nodes(self) -> list[NodeView]:
        return [NodeView(f"id-{h}", h, "", True, float(GPUS), float(GPUS)) for h in self.agents.hosts]

    def kept(self) -> GangView | None:
        if not self.placed:
            return None
        p = self.agents.placements
        return GangView(tuple(x.host for x in p), tuple(x.node_id for x in p), True)

    def adopt(self) -> list[RankPlacement]:
        return list(self.agents.placements)

    def place(self, world: int, *rest: Any) -> list[RankPlacement]:
        """(world, [group,] cordoned, should_stop): the group argument came with tensor-parallel placement."""
        self.placed = True
        return list(self.agents.placements)

    def start(self, attempt: int, *rest: Any) -> dict[int, int | None]:
        return {p.rank: 1000 + p.rank for p in self.agents.placements}

    def poll(self) -> tuple[list[RankObservation], list[Finding]]:
        obs: list[RankObservation] = []
        findings: list[Finding] = []
        for b in self.next_reports:
            rep = pickle.loads(b)
            obs.extend(rep["observations"])
            findings.extend(rep["findings"])
        return obs, findings

    def kill(self) -> None: ...

    def preflight(self, checkpoint_dir: str, timeout_s: float, collective: bool = True) -> PreflightReport:
        """Every host's probes pass: the bench measures steady state and one crash, not the preflight."""
        hosts = self.agents.hosts
        probes = {h: [ProbeResult("gpu", Severity.OK, "GPUs healthy", h, None, "nvml").to_dict()] for h in hosts}
        ranks = self.agents.placements
        coll = {p.rank: {"ok": True, "message": "all-reduce agreed"} for p in ranks} if collective else {}
        return PreflightReport(probes, {}, coll, {p.rank: p.host for p in ranks})

    def probe_evidence(self, hosts: list[str], since: float = 0.0) -> list[dict]:
        return []

    def check_links(self, f: Finding) -> Finding:
        return f

    def stop(self, grace_s: float) -> list[RankEnd]:
        return []

    def log_tails(self, ranks: list[int], max_bytes: int = 3000) -> dict[int, str]:
        return {r: XID79.format(host=self.agents.placements[r].host, rank=r) for r in ranks}

    def release(self) -> None:
        self.placed = False

    def shutdown(self) -> None: ...


def spec() -> JobSpec:
    return JobSpec.model_validate({
        "name": "load", "model": {"dim": 256, "n_layers": 16, "n_heads": 16, "n_kv_heads": 8, "max_seq_len": 64},
        "parallelism": {"dp": HOSTS * GPUS // 128, "tp": 8, "pp": 16, "cp": 1},
        "training": {"steps": 1_000_000, "seed": 1, "global_batch_size": HOSTS, "micro_batch_size": 1,
                     "seq_len": 32, "lr": {"peak": 0.01, "min_lr": 0.001, "warmup_steps": 2}},
        "data": {"paths": ["{stdlib}/json/*.py"], "max_bytes": 200_000},
        "checkpoint": {"interval_steps": 10, "async": True, "keep_last": 3},
        "reliability": {"hang_timeout_s": 600, "max_restarts": 50, "spares": 0},
        "resources": {"cpus_per_rank": 1, "gpus_per_rank": 1}})


def cpu_wall(fn: Any) -> tuple[float, float, Any]:
    c, w = time.process_time(), time.perf_counter()
    out = fn()
    return time.process_time() - c, time.perf_counter() - w, out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seconds", type=int, default=20, help="simulated seconds of steady state")
    args = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="ctlload-"))
    sp = spec()
    catalog = Catalog(f"sqlite:///{tmp / 'catalog.db'}")
    catalog.create_job(sp.name, sp.model_dump(mode="json"), sp.world_size, sp.training.steps, str(tmp / "run"), None)
    clock, ckpt = FakeClock(1_800_000_000.0), FakeCheckpoints()
    agents = AgentReports(clock, ckpt)
    wg = WorkerGroup(agents)
    ctl = Controller(sp, catalog, tmp / "run", tmp / "ckpt", workers=wg, spares=FakeSpares(), checkpoints=ckpt,
                     clock=clock, callbacks=CallbackList([CatalogWriter(catalog, sp.name, clock)]),
                     poll_interval_s=1.0)
    result: dict[str, Any] = {"hosts": HOSTS, "ranks": HOSTS * GPUS}
    # Placing and starting 16,384 ranks: the placement and start transactions.
    cpu, wall, _ = cpu_wall(lambda: [ctl.step() for _ in range(2)])
    assert ctl.state is ControllerState.RUNNING, ctl.state
    result["place_and_start_cpu_s"], result["place_and_start_wall_s"] = cpu, wall
    per_second = []
    for s in range(args.seconds):
        agents.step += 1
        if agents.step % 10 == 0:
            ckpt.steps.append(agents.step)
        wg.next_reports = agents.pickled()  # the agents' side: not the controller's CPU
        cpu, wall, _ = cpu_wall(ctl.step)
        per_second.append({"cpu_s": cpu, "wall_s": wall})
        print(f"second {s + 1}: controller cpu {cpu * 1000:.0f} ms, wall {wall * 1000:.0f} ms", flush=True)
    steady = per_second[3:] or per_second
    result["report_bytes_per_second"] = agents.report_bytes
    result["per_second"] = per_second
    result["steady_cpu_s_per_s_median"] = median([x["cpu_s"] for x in steady])
    # A crash on one rank: from the poll that carries it to the decision (state RESTARTING).
    agents.step += 1
    agents.crash_rank = min(12_345, HOSTS * GPUS - 1)
    wg.next_reports = agents.pickled()
    clock.now += 3.0  # past the peer-failure grace of a crash without a signal
    c0, w0 = time.process_time(), time.perf_counter()
    ctl.step()
    result["crash_to_decision_cpu_s"] = time.process_time() - c0
    result["crash_to_decision_wall_s"] = time.perf_counter() - w0
    result["state_after_crash"] = ctl.state.value
    last = catalog.interruptions(sp.name)[-1]
    result["recorded"] = {"category": last.category, "kind": last.kind, "hosts": last.hosts}
    print(f"crash -> decision: cpu {result['crash_to_decision_cpu_s']:.2f} s, wall "
          f"{result['crash_to_decision_wall_s']:.2f} s, state {ctl.state.value}, recorded {result['recorded']}")
    # The restart: a new gang (the cordoned host's ranks cannot stay) placed and started.
    agents.crash_rank = None
    cpu, wall, _ = cpu_wall(lambda: [ctl.step() for _ in range(2)])
    result["restart_place_and_start_cpu_s"], result["restart_place_and_start_wall_s"] = cpu, wall
    result["state_after_restart"] = ctl.state.value
    print(result)
    save("controller_load", {"seconds": args.seconds,
                             "load_average": Path("/proc/loadavg").read_text().split()[:3], **result})
    catalog.close()
    shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
