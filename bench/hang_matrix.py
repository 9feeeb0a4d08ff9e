"""Hang attribution over the layout × stall position × victim matrix, on real gloo processes (no Ray).

    python bench/hang_matrix.py [--layouts dp4,tp2pp2,...] [--fixtures tests/fixtures/hangs]

For each layout one set of rank processes is started (`health/drill.py`); each
cell stalls its victim at a point of its step (`step`, `forward`, `backward`,
`collective`, and `p2p` under pipelining) through the rank's control file: the
process and its beacon thread stay alive. The hang detector the controller
runs names a culprit; the cell passes when that is the victim. Detection time
is from the moment the victim stalled to the finding. Raw results:
bench/results/hang_matrix.json. With --fixtures, the detector's input of a
`forward` and a `p2p` cell per layout is written there as golden files for tests/unit.
"""

from __future__ import annotations

import argparse
import json
import sys
import sysconfig
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from bench.common import median, save  # noqa: E402
from health.drill import Cell, run_cells  # noqa: E402

LAYOUTS: dict[str, dict[str, int]] = {
    "dp4": {"dp": 4},
    "tp2pp2": {"tp": 2, "pp": 2},
    "dp2tp2": {"dp": 2, "tp": 2},
    "cp2pp2": {"cp": 2, "pp": 2},
    "pp4": {"pp": 4},
    "dp2pp2cp2tp2": {"dp": 2, "pp": 2, "cp": 2, "tp": 2},
}
POINTS = ("step", "forward", "backward", "collective", "p2p")


def cells_for(layout: dict[str, int]) -> list[Cell]:
    world = 1
    for v in layout.values():
        world *= v
    victims = list(range(world)) if world <= 4 else [0, 5, 10, 15]
    points = [p for p in POINTS if p != "p2p" or layout.get("pp", 1) > 1]
    # Alternate victims so that consecutive cells stall different ranks.
    return [Cell(victims[(i + j) % len(victims)], p) for i, p in enumerate(points) for j in range(len(victims))]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--layouts", default=",".join(LAYOUTS))
    ap.add_argument("--fixtures", type=Path, default=None)
    args = ap.parse_args()
    data = f"{sysconfig.get_paths()['stdlib']}/json/*.py"
    rows = []
    for name in args.layouts.split(","):
        layout = LAYOUTS[name]
        t0 = time.time()
        with tempfile.TemporaryDirectory() as tmp:
            results = run_cells(layout, cells_for(layout), Path(tmp), data_glob=data,
                                keep_snapshots=args.fixtures is not None)
        for r in results:
            ok = r.named == [r.victim] and r.certain and not r.error
            rows.append({"layout_name": name, **r.to_dict(), "ok": ok})
            print(f"{name:14s} victim {r.victim:2d} at {r.where:10s} -> named {r.named} "
                  f"{'ok ' if ok else 'BAD'} detection {r.detection_s or float('nan'):.1f} s "
                  f"(limit {r.limit_s or float('nan'):.1f} s) {r.error}", flush=True)
        if args.fixtures is not None:
            for where in ("forward", "p2p"):
                pick = next((r for r in results if r.snapshot and r.victim != 0 and r.where == where), None)
                if pick is not None:
                    args.fixtures.mkdir(parents=True, exist_ok=True)
                    path = args.fixtures / f"{name}-rank{pick.victim}-{pick.where}.json"
                    path.write_text(json.dumps(pick.snapshot, indent=1, sort_keys=True) + "\n")
        print(f"{name}: {len(results)} cells in {time.time() - t0:.0f} s", flush=True)
    ok = sum(r["ok"] for r in rows)
    det = [r["detection_s"] for r in rows if r["detection_s"] is not None]
    print(f"{ok}/{len(rows)} cells named the victim; median detection {median(det):.1f} s")
    print(save("hang_matrix", {"cells": rows, "ok": ok, "total": len(rows), "median_detection_s": median(det)}))


if __name__ == "__main__":
    main()
