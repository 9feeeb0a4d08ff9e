"""A catalog filled the way a busy deployment fills it, for the CLI's output and error tests.

Rows are written through the repository, as the controller writes them: long cloud
host names, every failure category, every status, long job names and free text.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

from orchestrator.catalog.repository import Catalog
from orchestrator.taxonomy import CATEGORIES, COMPONENT_OF

HOSTS = [f"ip-10-0-{n}-{n + 17}.us-west-2.compute.internal" for n in range(100, 106)]
JOBS = {
    "llama3-8b-pretrain-ablation-07": ("running", "restarting after an interruption"),
    "mixtral-sft-long-context": ("failed", "crash loop: the same error at step 1200 in three attempts in a row "
                                           "[rank 3] [/var/log/x], see incident 7 for the evidence"),
    "tiny": ("succeeded", None),
}
KINDS = ["crash", "hang", "node_lost", "bad_gpu", "straggler", "controller_lost", "placement_failed"]
STATUSES = ["open", "acknowledged", "resolved"]
AGES = [timedelta(seconds=20), timedelta(minutes=3), timedelta(hours=5), timedelta(days=2), timedelta(days=400)]


def fill(url: str, runs: Path, now: datetime | None = None) -> dict[str, list[str]]:
    """Write the rows; returns the identifiers the tables must show whole."""
    now = now or datetime.now(UTC)
    cat = Catalog(url)
    for n, (name, (state, reason)) in enumerate(JOBS.items()):
        rdir = runs / name
        rdir.mkdir(parents=True, exist_ok=True)
        t0 = now - timedelta(hours=2)
        rows = [{"step": s, "loss": 5.0 - s / 10, "tokens": 1024, "step_seconds": 0.5,
                 "time": (t0 + timedelta(seconds=30 + s)).timestamp()} for s in range(1, 21)]
        (rdir / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
        cat.create_job(name, {"name": name}, world_size=16 * (n + 1), steps_total=100_000, run_dir=str(rdir),
                       ray_address="127.0.0.1:1")
        aid = cat.start_attempt(name, 1, 0, {"dp": 16 * (n + 1)})
        for rank in range(16 * (n + 1)):
            cat.upsert_rank(aid, rank, host=HOSTS[rank % len(HOSTS)], node_id=f"{rank:056x}", pid=40_000 + rank,
                            state="failed" if rank == 3 else "running", step=12_345,
                            signal="SIGKILL" if rank == 3 else None, log_path=str(rdir / f"rank{rank}.log"))
        cat.update_job(name, state=state, reason=reason, last_step=12_345, last_loss=2.3456,
                       tokens_per_second=123_456.0, started_at=t0,
                       ended_at=None if state == "running" else now - timedelta(minutes=1))
    names = list(JOBS)
    for k, category in enumerate(CATEGORIES):
        detected = now - AGES[k % len(AGES)]
        iid = cat.record_interruption(
            job_name=names[k % len(names)], attempt=1 + k % 3, planned=k == 5, category=category,
            component=COMPONENT_OF[category], confidence=0.9, kind=KINDS[k % len(KINDS)],
            explanation=f"matched pattern {k}: " + "the evidence names this category " * 3,
            ranks=list(range(k % 4, k % 4 + 1 + k % 9)) + [40 + k], hosts=HOSTS[: 1 + k % 3],
            fault_at=detected - timedelta(seconds=2), detected_at=detected,
            resumed_at=detected + timedelta(seconds=40), steps_lost=k % 5)
        cat.update_interruption(iid, status=STATUSES[k % len(STATUSES)])
    for k, host in enumerate(HOSTS):
        cat.see_host(host, f"{k:056x}", f"10.0.{100 + k}.{200 + k}")
        if k % 2:
            cat.set_host_state(host, ["cordoned", "suspect", "repaired"][k % 3], actor="controller",
                               reason="Xid 79 (GPU has fallen off the bus) on GPU 3; cordoned after the second "
                                      "hardware interruption in 30 days")
    cat.close()
    return {"jobs": names, "hosts": HOSTS, "categories": list(CATEGORIES), "kinds": KINDS,
            "statuses": STATUSES}
