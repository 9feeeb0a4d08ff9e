"""Accuracy of the classifier on a folder of labelled evidence, overall and per category.

Label convention (tests/fixtures/evidence/README.md): each evidence file sits in a
folder named after its expected category (`<set>/<category>/<name>.log`); an
optional `<set>/hosts.json` maps a file's path relative to the set
(`"faulty_gpu/x.log"`) to the host (or list of hosts) the verdict must name
first. Prints a JSON summary; raw per-file results go to
bench/results/classifier-<setname>.json.

    python bench/classifier_accuracy.py tests/fixtures/evidence/dev
    python bench/classifier_accuracy.py path/to/heldout --name heldout
"""

from __future__ import annotations

import argparse
import json
import sys
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from bench.common import save  # noqa: E402
from orchestrator.classifier import CORDON_CONFIDENCE, classify  # noqa: E402
from orchestrator.taxonomy import CATEGORIES, COMPONENT_OF  # noqa: E402

EVIDENCE_SUFFIXES = {".log", ".txt"}


def load_set(root: Path) -> tuple[list[tuple[Path, str]], dict[str, list[str]]]:
    """The labelled files of a set (path, expected category) and the expected hosts by relative path."""
    files = sorted((p, p.parent.name) for p in root.glob("*/*") if p.suffix in EVIDENCE_SUFFIXES and p.is_file())
    unknown = sorted({c for _, c in files} - set(CATEGORIES))
    if unknown:
        raise ValueError(f"{root}: folders that are not categories: {', '.join(unknown)}")
    hosts_file = root / "hosts.json"
    raw = json.loads(hosts_file.read_text()) if hosts_file.exists() else {}
    hosts = {k: [v] if isinstance(v, str) else list(v) for k, v in raw.items()}
    return files, hosts


def evaluate(root: Path) -> dict[str, Any]:
    files, expected_hosts = load_set(root)
    if not files:
        raise ValueError(f"{root}: no labelled evidence files (<set>/<category>/<name>.log)")
    rows = []
    for path, label in files:
        v = classify(path.read_text(errors="replace"))
        rel = path.relative_to(root).as_posix()
        want_hosts = expected_hosts.get(rel)
        rows.append({"file": rel, "expected": label, "got": v.category, "correct": v.category == label,
                     "component_correct": v.component == COMPONENT_OF[label], "confidence": round(v.confidence, 3),
                     "would_cordon": v.cordon, "hosts": list(v.hosts), "expected_hosts": want_hosts,
                     "host_correct": None if want_hosts is None else bool(v.hosts) and v.hosts[0] in want_hosts,
                     "explanation": v.explanation})
    per: dict[str, dict[str, Any]] = defaultdict(lambda: {"n": 0, "correct": 0})
    for r in rows:
        per[r["expected"]]["n"] += 1
        per[r["expected"]]["correct"] += r["correct"]
    for d in per.values():
        d["accuracy"] = round(d["correct"] / d["n"], 3)
    host_rows = [r for r in rows if r["host_correct"] is not None]
    hardware = [r for r in rows if COMPONENT_OF[r["expected"]] in ("gpu", "host", "network")]
    healthy_cordoned = [r["file"] for r in rows if r["would_cordon"] and r not in hardware]
    return {
        "set": str(root), "files": len(rows),
        "accuracy": round(sum(r["correct"] for r in rows) / len(rows), 3),
        "component_accuracy": round(sum(r["component_correct"] for r in rows) / len(rows), 3),
        "host_accuracy": round(sum(r["host_correct"] for r in host_rows) / len(host_rows), 3) if host_rows else None,
        "host_files": len(host_rows),
        "cordon_threshold": CORDON_CONFIDENCE,
        "hardware_files_cordoned": round(sum(r["would_cordon"] and r["correct"] for r in hardware) / len(hardware), 3)
        if hardware else None,
        "cordoned_without_hardware_fault": healthy_cordoned,
        "per_category": dict(sorted(per.items())),
        "confusions": dict(Counter(f"{r['expected']} -> {r['got']}" for r in rows if not r["correct"])),
        "rows": rows,
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("folder", type=Path, help="labelled set: <folder>/<category>/<name>.log")
    ap.add_argument("--name", help="set name for the result file (default: the folder's name)")
    args = ap.parse_args(argv)
    if not args.folder.is_dir():
        print(f"error: {args.folder} is not a folder", file=sys.stderr)
        return 2
    try:
        result = evaluate(args.folder)
    except (ValueError, OSError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    path = save(f"classifier-{args.name or args.folder.resolve().name}", result)
    summary = {k: v for k, v in result.items() if k != "rows"}
    summary["raw_results"] = str(path)
    print(json.dumps(summary, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
