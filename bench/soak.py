"""ETTR under a storm of faults: the example job with a fault every T seconds until it ends.

    python bench/soak.py [--period-s 45] [--steps 800] [--configs before,after] [--faults kill,hang]
                         [--config NAME[@CODE_DIR][:KEY=VALUE;KEY=VALUE]]

Each configuration submits the example job (embedded Ray, 4 ranks) with
`training.steps` raised to --steps, then injects faults with `orchestrator chaos`
(the kinds in --faults, alternating, each on a random rank) every --period-s
seconds while it trains, and reads ETTR and the time lost by cause from
`orchestrator report --json` once the job has ended. Configurations run one
after the other in the same invocation, so they are compared on the same
machine at the same time. Built in:

- before: the example job as it is, run by the baseline code in $SOAK_BEFORE_CODE
  (a checkout of the commit to compare against, e.g. `git worktree add /tmp/base
  <commit>`): checkpoints every 25 steps, the hang limit of that code;
- after:  this tree's code with `checkpoint.interval_steps: auto`;
- fixed / auto: this tree's code with the job as it is / with the auto interval.

`--config` adds one: a name, the code to run it with (a source tree put first on
PYTHONPATH; default this one) and job-file overrides as dotted keys with YAML
values, e.g. `--config snap:checkpoint.interval_steps=auto;checkpoint.snapshot_interval_steps=5`.
Each result names the git commit of its code.

`--period-s 0` is the no-fault soak: it must record no interruption.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import random
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from bench.common import save  # noqa: E402
from trainer.files import read_jsonl  # noqa: E402

ORCH = str(Path(sys.executable).parent / "orchestrator")
JOB = "example"


@dataclass(frozen=True)
class SoakConfig:
    name: str
    code: Path = REPO
    """Source tree the orchestrator, controller and trainer are imported from (first on PYTHONPATH)."""
    overrides: dict[str, Any] = field(default_factory=dict)
    """Dotted job-file keys -> values, applied to examples/job.yaml."""


BUILT_IN = {
    "before": SoakConfig("before", Path(os.environ.get("SOAK_BEFORE_CODE", "SOAK_BEFORE_CODE-is-not-set"))),
    "after": SoakConfig("after", REPO, {"checkpoint.interval_steps": "auto"}),
    "fixed": SoakConfig("fixed", REPO),
    "auto": SoakConfig("auto", REPO, {"checkpoint.interval_steps": "auto"}),
}


def parse_config(text: str) -> SoakConfig:
    """NAME[@CODE_DIR][:KEY=VALUE;KEY=VALUE] (values are YAML: 5, auto, true)."""
    import yaml

    head, _, rest = text.partition(":")
    name, _, code = head.partition("@")
    overrides = {}
    for item in filter(None, rest.split(";")):
        key, eq, value = item.partition("=")
        if not eq:
            raise SystemExit(f"--config {text!r}: {item!r} is not KEY=VALUE")
        overrides[key.strip()] = yaml.safe_load(value)
    return SoakConfig(name, Path(code).resolve() if code else REPO, overrides)


def job_file(folder: Path, cfg: SoakConfig, steps: int) -> Path:
    import yaml

    spec = yaml.safe_load((REPO / "examples" / "job.yaml").read_text())
    spec["training"]["steps"] = steps
    spec["reliability"]["max_restarts"] = 1000  # the storm is the point: never run out
    for key, value in cfg.overrides.items():
        *parents, last = key.split(".")
        node = spec
        for p in parents:
            node = node.setdefault(p, {})
        node[last] = value
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "job.yaml"
    path.write_text(yaml.safe_dump(spec))
    return path


def code_commit(code: Path) -> str:
    r = subprocess.run(["git", "-C", str(code), "rev-parse", "HEAD"], capture_output=True, text=True)
    dirty = subprocess.run(["git", "-C", str(code), "status", "--porcelain", "--untracked-files=no"],
                           capture_output=True, text=True).stdout.strip()
    return r.stdout.strip() + ("+uncommitted" if dirty else "")


def orch(args: list[str], env: dict[str, str], timeout_s: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run([ORCH, *args], env=env, capture_output=True, text=True, timeout=timeout_s,
                          cwd=env.get("PYTHONPATH"))


def uptime() -> str:
    return subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()


class Job:
    """One submitted example job in its own state folder (embedded Ray), run by `cfg.code`."""

    def __init__(self, state: Path, cfg: SoakConfig, steps: int) -> None:
        self.state, self.cfg = state, cfg
        # Ray puts the submitting process's working folder first on its workers' path: run it from the code too.
        self.env = dict(os.environ, ORCHESTRATOR_HOME=str(state), PYTHONPATH=str(cfg.code))
        self.run_dir = state / "runs" / JOB
        self.started = time.time()
        self.proc = subprocess.Popen([ORCH, "submit", str(job_file(state, cfg, steps))], env=self.env,
                                     cwd=cfg.code, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                     start_new_session=True)

    def training(self) -> bool:
        return (self.run_dir / "metrics.jsonl").exists()

    def chaos(self, kind: str, rank: int, *extra: str) -> dict[str, Any]:
        before = time.time()
        r = orch(["chaos", kind, JOB, "--rank", str(rank), *extra], self.env)
        return {"kind": kind, "rank": rank, "sent_after": before, "sent_by": time.time(),
                "t": before - self.started, "ok": r.returncode == 0, "out": (r.stdout + r.stderr).strip()[-200:]}

    def wait(self, timeout_s: float) -> int | None:
        try:
            return self.proc.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            return None

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()

    def report(self) -> dict[str, Any]:
        return json.loads(orch(["report", JOB, "--json"], self.env).stdout)["per_job"][0]

    def incidents(self) -> list[dict[str, Any]]:
        return json.loads(orch(["incidents", "list", "--json"], self.env).stdout)

    def rows(self) -> list[dict[str, Any]]:
        return read_jsonl(self.run_dir / "metrics.jsonl")


def one(cfg: SoakConfig, period_s: float, steps: int, faults: list[str], seed: int,
        max_wall_s: float) -> dict[str, Any]:
    rng = random.Random(seed)
    with tempfile.TemporaryDirectory(prefix="soak-") as d:
        load_before = uptime()
        job = Job(Path(d), cfg, steps)
        injected: list[dict[str, Any]] = []
        next_fault = None
        rc = None
        try:
            while job.proc.poll() is None and time.time() - job.started < max_wall_s:
                time.sleep(0.5)
                if period_s <= 0 or not job.training():
                    continue
                if next_fault is None:
                    next_fault = time.time() + period_s
                if time.time() >= next_fault:
                    injected.append(job.chaos(faults[len(injected) % len(faults)], rng.randrange(4)))
                    next_fault = time.time() + period_s
            rc = job.proc.poll()
        finally:
            job.kill()
        rep = job.report()
        incidents = job.incidents()
        rows = job.rows()
        timeline = attempt_timeline(Path(d) / "catalog.db")
        return {"config": cfg.name, "code": str(cfg.code), "commit": code_commit(cfg.code),
                "overrides": cfg.overrides, "period_s": period_s, "steps": steps, "exit_code": rc,
                "timed_out": rc is None, "wall_s": time.time() - job.started,
                "uptime_before": load_before, "uptime_after": uptime(),
                "faults_injected": sum(1 for f in injected if f["ok"]), "faults": injected,
                "interruptions_recorded": sum(1 for i in incidents if not i["planned"] and i["kind"] != "straggler"),
                "incidents": incidents, "ettr": rep["ettr"], "time_lost_seconds": rep["time_lost_seconds"],
                "steps_redone": rep.get("steps_redone"), "final_step": max((r["step"] for r in rows), default=0),
                "state": rep["state"], "report": rep, "attempts": timeline,
                "unattributed_parts": unattributed_parts(rows, incidents, rep),
                "loop_seconds": {"snapshots": sum(r.get("snapshot_seconds") or 0.0 for r in rows),
                                 "snapshot_count": sum(1 for r in rows if r.get("snapshot_seconds")),
                                 "checkpoint_blocked": sum(r.get("checkpoint_blocked_seconds") or 0.0 for r in rows)}}


def unattributed_parts(rows: list[dict[str, Any]], incidents: list[dict[str, Any]],
                       rep: dict[str, Any]) -> dict[str, float]:
    """Where the report's `unattributed` time lies, from the step rows' own times: between steps of an attempt
    (outside the loop's step timer), in the step a fault cut short (last row to the fault), and after the
    last step until the job ended (final save, exit, the controller's bookkeeping)."""
    from datetime import datetime

    between = sum(max(0.0, b["time"] - a["time"] - b["step_seconds"])
                  for a, b in zip(rows, rows[1:], strict=False) if a.get("attempt") == b.get("attempt"))
    cut = 0.0
    for i in incidents:
        if i.get("planned") or i.get("kind") == "straggler" or not i.get("fault_at"):
            continue
        fault = datetime.fromisoformat(i["fault_at"]).timestamp()
        before = [r["time"] for r in rows if r["time"] <= fault]
        if before:
            cut += fault - max(before)
    tail = (rep["ended_at"] - rows[-1]["time"]) if rows and rep.get("ended_at") else 0.0
    return {"between_steps": between, "cut_short_by_faults": cut, "after_last_step": max(0.0, tail)}


def attempt_timeline(db: Path) -> list[dict[str, Any]]:
    """Each attempt's times and steps from the catalog (read-only), to see where a run's time went."""
    import sqlite3

    with contextlib.closing(sqlite3.connect(f"file:{db}?mode=ro", uri=True)) as con:
        cur = con.execute("SELECT number, state, started_at, first_step_at, ended_at, start_step, end_step, layout "
                          "FROM attempts ORDER BY number")
        cols = [c[0] for c in cur.description]
        out = [dict(zip(cols, row, strict=True)) for row in cur.fetchall()]
    for a in out:
        layout = json.loads(a.pop("layout") or "{}")
        a["preflight_s"] = layout.get("preflight_s")
        a["preflight"] = layout.get("preflight")
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--period-s", type=float, default=45.0)
    ap.add_argument("--steps", type=int, default=800)
    ap.add_argument("--configs", default="before,after", help=f"built in: {', '.join(BUILT_IN)}")
    ap.add_argument("--config", action="append", default=[], help="NAME[@CODE_DIR][:KEY=VALUE;...] (repeatable)")
    ap.add_argument("--faults", default="kill,hang")
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--max-wall-s", type=float, default=1800.0, help="stop a configuration's job after this long")
    ap.add_argument("--name", default=None, help="result file name (default soak / soak_no_faults)")
    args = ap.parse_args()
    configs = [BUILT_IN[c] for c in filter(None, args.configs.split(","))] + [parse_config(c) for c in args.config]
    for c in configs:
        if not (c.code / "orchestrator").is_dir():
            raise SystemExit(f"configuration {c.name}: no source tree at {c.code} (before: set SOAK_BEFORE_CODE)")
    results = []
    for cfg in configs:
        r = one(cfg, args.period_s, args.steps, args.faults.split(","), args.seed, args.max_wall_s)
        print(f"{cfg.name}: ETTR {r['ettr']:.3f}, {r['faults_injected']} faults injected, "
              f"{r['interruptions_recorded']} recorded, state {r['state']}, final step {r['final_step']}, "
              f"lost {json.dumps({k: round(v, 1) for k, v in r['time_lost_seconds'].items()})}", flush=True)
        results.append(r)
    name = args.name or ("soak" if args.period_s > 0 else "soak_no_faults")
    print(f"raw results: {save(name, {'args': vars(args), 'results': results})}")


if __name__ == "__main__":
    main()
