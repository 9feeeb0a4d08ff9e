"""Hang detection on the example job: no false alarm without faults, and how fast real hangs are found.

    python bench/hang_latency.py [--steps 400] [--fault-steps 250] [--every-s 15] [--faults hang,stall]

Two runs of `examples/job.yaml` (4 ranks, embedded Ray, this tree's code):

1. no fault for --steps steps, with the jitter a healthy job has: checkpoint
   steps every 25 steps, garbage collection, and one rank slowed (`orchestrator
   chaos slow`) by less than the straggler threshold for the middle third of
   the run. Every interruption recorded here is a false alarm. A sampler reads
   the beacon files every 0.1 s for the oldest heartbeat of a training rank
   (what the beacon staleness limit must stay above), and the hang limit is
   replayed over the run's step intervals with the detector's own function
   (the headroom each step left below it).
2. --fault-steps steps with a hang every --every-s seconds on a random rank,
   alternating SIGSTOP (`chaos hang`) and a live stall (`chaos stall`); each is
   matched to the hang the controller recorded, and the detection latency is
   taken from the catalog (fault to detection) and from when the fault was
   sent (the signal; the stall's own marker file).
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import sys
import tempfile
import threading
import time
from datetime import datetime
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from bench.common import save  # noqa: E402
from bench.soak import BUILT_IN, Job, code_commit, uptime  # noqa: E402
from health.detectors import POLL_PERIOD_S, HangConfig, hang_limit  # noqa: E402
from orchestrator.controller.monitor import INTERVAL_WINDOW  # noqa: E402

CHECKPOINT_EVERY = 25
SLOW_DELAY_S = 0.05
"""Below the straggler detector's lag threshold (a quarter of a step: about 0.1 s for 0.4-s steps)."""


def ts(text: str | None) -> float | None:
    return None if text is None else datetime.fromisoformat(text).timestamp()


class BeaconAges:
    """Samples every rank's beacon file: the oldest heartbeat seen while the rank trains."""

    def __init__(self, folder: Path) -> None:
        self.folder, self.max_age, self.samples = folder, 0.0, 0
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self.stop.wait(0.1):
            for p in self.folder.glob("rank-*.json"):
                try:
                    b = json.loads(p.read_text())
                except (OSError, ValueError):
                    continue
                if b.get("phase") == "train" and b.get("time"):
                    self.max_age = max(self.max_age, time.time() - float(b["time"]))
                    self.samples += 1


def replay_limits(rows: list[dict[str, Any]], cfg: HangConfig) -> dict[str, Any]:
    """The limit each step of the run met (learned from the steps before it) and the headroom it left.

    A step's interval is the wall time between two metrics rows (one per step,
    written at its end); the controller sees it up to one poll late, so
    headroom = limit - (interval + poll period). Below zero would be a false hang.
    """
    plain: list[float] = []
    saves: list[float] = []
    worst: dict[str, Any] = {"headroom_s": float("inf")}
    headrooms = []
    ratios = []
    """Each step's interval over the slowest of its kind before it (what `interval_multiple` must exceed)."""
    ordered = sorted(rows, key=lambda r: r["time"])
    for prev, row in zip(ordered, ordered[1:], strict=False):
        if row["step"] != prev["step"] + 1 or row.get("attempt") != prev.get("attempt"):
            continue
        interval = row["time"] - prev["time"]
        saving = row["step"] % CHECKPOINT_EVERY in (0, 1)
        limit = hang_limit(plain[-INTERVAL_WINDOW:], cfg, saving=saving, save_step_seconds=saves[-16:])
        if len(plain) >= cfg.min_intervals and (not saving or saves):
            head = limit - (interval + POLL_PERIOD_S)
            headrooms.append(head)
            if head < worst["headroom_s"]:
                worst = {"headroom_s": head, "step": row["step"], "interval_s": interval, "limit_s": limit,
                         "saving": saving}
        pool = saves if saving else plain
        if len(pool) >= 3:
            ratios.append(interval / max(pool[-(16 if saving else INTERVAL_WINDOW):]))
        pool.append(interval)
    intervals = plain + saves
    return {"intervals": len(intervals), "median_interval_s": statistics.median(intervals) if intervals else None,
            "max_plain_interval_s": max(plain, default=None), "max_save_interval_s": max(saves, default=None),
            "min_headroom_s": worst["headroom_s"], "worst_step": worst,
            "steps_over_limit": sum(1 for h in headrooms if h < 0),
            "max_ratio_to_slowest_before": max(ratios, default=None),
            "intervals_s": [round(x, 4) for x in intervals]}


def no_fault(steps: int, rng: random.Random) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="hang-nofault-") as d:
        load_before = uptime()
        job = Job(Path(d), BUILT_IN["fixed"], steps)
        ages = BeaconAges(job.run_dir / "beacons")
        ages.thread.start()
        slowed: list[dict[str, Any]] = []
        victim = rng.randrange(4)
        try:
            while job.proc.poll() is None and time.time() - job.started < 300:
                time.sleep(0.5)
                done = max((r["step"] for r in job.rows()), default=0) if job.training() else 0
                if not slowed and done >= steps // 3:
                    slowed.append(job.chaos("slow", victim, "--delay-s", str(SLOW_DELAY_S)))
                elif len(slowed) == 1 and done >= 2 * steps // 3:
                    slowed.append(job.chaos("slow", victim, "--delay-s", "0"))
            rc = job.proc.poll()
        finally:
            ages.stop.set()
            job.kill()
        incidents = job.incidents()
        rows = job.rows()
        return {"steps": steps, "exit_code": rc, "wall_s": time.time() - job.started,
                "final_step": max((r["step"] for r in rows), default=0),
                "uptime_before": load_before, "uptime_after": uptime(), "slowed": slowed,
                "interruptions": [i for i in incidents if not i["planned"] and i["kind"] != "straggler"],
                "stragglers": [i for i in incidents if i["kind"] == "straggler"],
                "beacon_max_age_s": ages.max_age, "beacon_samples": ages.samples,
                "limit_replay": replay_limits(rows, HangConfig(timeout_s=60)),
                "step_seconds": [r["step_seconds"] for r in rows]}


def stall_marker(job: Job, rank: int, after: float, wait_s: float = 5.0) -> float | None:
    path = job.run_dir / "control" / f"rank-{rank:05d}.json.stalled"
    deadline = time.time() + wait_s
    while time.time() < deadline:
        try:
            t = float(json.loads(path.read_text())["time"])
            if t >= after:
                return t
        except (OSError, ValueError, KeyError):
            pass
        time.sleep(0.1)
    return None


def faults(steps: int, every_s: float, kinds: list[str], rng: random.Random) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="hang-faults-") as d:
        load_before = uptime()
        job = Job(Path(d), BUILT_IN["fixed"], steps)
        sent: list[dict[str, Any]] = []
        next_at = None
        try:
            while job.proc.poll() is None and time.time() - job.started < 260:
                time.sleep(0.5)
                if not job.training():
                    continue
                next_at = next_at or time.time() + every_s
                if time.time() >= next_at:
                    kind = kinds[len(sent) % len(kinds)]
                    f = job.chaos(kind, rng.randrange(4), *(["--where", "collective"] if kind == "stall" else []))
                    if kind == "stall" and f["ok"]:
                        f["stalled_at"] = stall_marker(job, f["rank"], f["sent_after"])
                    sent.append(f)
                    next_at = time.time() + every_s
            rc = job.proc.poll()
        finally:
            job.kill()
        hangs = sorted((i for i in job.incidents() if i["kind"] == "hang"), key=lambda i: i["detected_at"])
        matched = []
        for f in (f for f in sent if f["ok"]):
            start = f.get("stalled_at") or f["sent_after"]
            i = next((i for i in hangs if ts(i["detected_at"]) >= start and f["rank"] in i["ranks"]), None)
            if i is None:
                matched.append({**f, "detected": False})
                continue
            hangs.remove(i)
            det = ts(i["detected_at"])
            m = {**f, "detected": True, "incident": i["id"], "named": i["ranks"],
                 "catalog_fault_to_detection_s": det - ts(i["fault_at"]),
                 "sent_to_detection_s": [det - f["sent_by"], det - f["sent_after"]]}
            if f.get("stalled_at"):
                m["stall_to_detection_s"] = det - f["stalled_at"]
            matched.append(m)
        return {"steps": steps, "every_s": every_s, "exit_code": rc, "wall_s": time.time() - job.started,
                "uptime_before": load_before, "uptime_after": uptime(), "faults": matched,
                "unmatched_hangs": hangs,
                "other_interruptions": [i for i in job.incidents()
                                        if not i["planned"] and i["kind"] not in ("hang", "straggler")]}


def summary(values: list[float]) -> dict[str, float] | None:
    return {"median": statistics.median(values), "max": max(values), "n": len(values)} if values else None


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--steps", type=int, default=400)
    ap.add_argument("--fault-steps", type=int, default=250)
    ap.add_argument("--every-s", type=float, default=15.0)
    ap.add_argument("--faults", default="hang,stall")
    ap.add_argument("--seed", type=int, default=3)
    ap.add_argument("--skip-no-fault", action="store_true")
    args = ap.parse_args()
    rng = random.Random(args.seed)
    out: dict[str, Any] = {"args": vars(args), "commit": code_commit(REPO)}
    if not args.skip_no_fault:
        nf = out["no_fault"] = no_fault(args.steps, rng)
        rp = nf["limit_replay"]
        print(f"no fault: {nf['final_step']} steps, {len(nf['interruptions'])} interruptions, "
              f"{len(nf['stragglers'])} stragglers; beacon max age {nf['beacon_max_age_s']:.2f} s; "
              f"median step {rp['median_interval_s']:.3f} s, slowest plain {rp['max_plain_interval_s']:.3f} s, "
              f"slowest save {rp['max_save_interval_s']:.3f} s, min headroom {rp['min_headroom_s']:.2f} s; "
              f"load {nf['uptime_after']}", flush=True)
        save("hang_latency", out)  # kept if the faults run does not finish
    fr = out["faults"] = faults(args.fault_steps, args.every_s, args.faults.split(","), rng)
    for kind in args.faults.split(","):
        done = [f for f in fr["faults"] if f["kind"] == kind and f.get("detected")]
        out[f"{kind}_latency"] = {
            "catalog": summary([f["catalog_fault_to_detection_s"] for f in done]),
            "from_sent": summary([f["sent_to_detection_s"][0] for f in done]),
            "from_stall_marker": summary([f["stall_to_detection_s"] for f in done if "stall_to_detection_s" in f]),
            "sent": sum(1 for f in fr["faults"] if f["kind"] == kind), "detected": len(done)}
        print(f"{kind}: {json.dumps(out[f'{kind}_latency'])}", flush=True)
    print(f"faults run: load {fr['uptime_after']}; unmatched hangs {len(fr['unmatched_hangs'])}, "
          f"other interruptions {len(fr['other_interruptions'])}")
    print(f"raw results: {save('hang_latency', out)}")


if __name__ == "__main__":
    main()
