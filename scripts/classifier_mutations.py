"""Mutation check for the classifier's tests: remove one rule at a time and name the test that notices.

Every named rule (and with --patterns every one of its patterns), Xid entry,
never-decides filter and decision step is removed (or switched off) in turn, tests/unit/test_classifier.py runs against
the mutated classifier (stopping at the first failure), and the result is one
JSON line per mutation: what was removed and the first test that failed, or
null when the suite stayed green (a rule no test needs).

    PYTHONPATH=. python scripts/classifier_mutations.py [--patterns] [--only SUBSTRING] > mutations.jsonl
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import orchestrator.classifier as clf  # noqa: E402
import orchestrator.classifier_rules as rules  # noqa: E402
import orchestrator.evidence_lines as ev  # noqa: E402

TESTS = str(REPO / "tests" / "unit" / "test_classifier.py")


class _FirstFailure:
    def __init__(self) -> None:
        self.failed: str | None = None

    def pytest_runtest_logreport(self, report: Any) -> None:
        if report.failed and self.failed is None:
            self.failed = report.nodeid.split("::", 1)[-1]


def _run() -> str | None:
    probe = _FirstFailure()
    with open("/dev/null", "w") as null, contextlib.redirect_stdout(null):
        pytest.main([TESTS, "-x", "-q", "-p", "no:cacheprovider", "-p", "no:randomly"], plugins=[probe])
    return probe.failed


@contextlib.contextmanager
def _without(seq: list[Any], i: int) -> Iterator[None]:
    item = seq.pop(i)
    try:
        yield
    finally:
        seq.insert(i, item)


@contextlib.contextmanager
def _without_key(d: dict[Any, Any], k: Any) -> Iterator[None]:
    v = d.pop(k)
    try:
        yield
    finally:
        d[k] = v


@contextlib.contextmanager
def _patched(obj: Any, name: str, value: Any) -> Iterator[None]:
    old = getattr(obj, name)
    setattr(obj, name, value)
    try:
        yield
    finally:
        setattr(obj, name, old)


@contextlib.contextmanager
def _without_named(category: str, name: str) -> Iterator[None]:
    saved = list(rules.RULES)
    rules.RULES[:] = [r for r in saved if (r.category, r.name) != (category, name)]
    try:
        yield
    finally:
        rules.RULES[:] = saved


def mutations(patterns: bool) -> Iterator[tuple[str, Callable[[], contextlib.AbstractContextManager[None]]]]:
    for category, name in dict.fromkeys((r.category, r.name) for r in rules.RULES):
        yield f"rule {category} / {name} (all its patterns)", lambda c=category, n=name: _without_named(c, n)
    for i, r in enumerate(list(rules.RULES) if patterns else []):
        yield f"rule {r.category} / {r.name} / {r.pattern.pattern[:70]}", lambda i=i: _without(rules.RULES, i)
    for code in list(rules.XID_TABLE):
        yield f"xid {code}", lambda code=code: _without_key(rules.XID_TABLE, code)
    for i, rx in enumerate(list(ev.NEVER_DECIDES)):
        yield f"never-decides {rx.pattern[:70]}", lambda i=i: _without(ev.NEVER_DECIDES, i)
    for i, rx in enumerate(list(ev.BLANKED)):
        yield f"blanked {rx.pattern[:70]}", lambda i=i: _without(ev.BLANKED, i)
    for pair in sorted(clf.REFINES):
        yield f"refines {pair}", lambda pair=pair: _without_refine(pair)
    yield "weak signatures decide like causes", _weak_as_cause
    yield "several devices lost at once not read as the IO board", lambda: _patched(
        clf, "_devices_lost_with", lambda first, hits: set())
    yield "corrected errors decide", lambda: _patched(ev, "CORRECTED", ev.re.compile(r"(?!)"))
    yield "recovered warnings decide", lambda: _patched(clf, "_cancel_recovered", lambda hits, lines: hits)
    yield "text order instead of time order", lambda: _patched(clf, "_in_time_order", lambda lines: lines)
    yield "replay refutation ignored", lambda: _patched(clf, "SDC_NOT_CONFIRMED", ev.re.compile(r"(?!)"))
    yield "Xid 94/95 never located in SRAM by another line", lambda: _patched(clf, "_ecc_located", lambda hits: hits)
    yield "Xid 94/95 located on any GPU of the host", lambda: _patched(clf, "_pci_buses", lambda raw: set())
    yield "a replay's own report names its host", lambda: _patched(clf, "_replay_report", lambda h: False)
    yield "lines judged before their zero counts are blanked", lambda: _patched(
        ev, "decidable_text", lambda line: "" if ev.never_decides(line) else ev.blank_benign(line))
    yield "header lines name no host", lambda: _patched(ev, "HEADER_ONLY", ev.re.compile(r"(?!)"))
    yield "tables not read", lambda: _patched(ev, "_table_header", lambda line: None)
    yield "corrected GHES records decide", lambda: _patched(ev, "GHES_NO_FAULT", set())
    yield "journal JSON timestamps ignored", lambda: _patched(ev, "JOURNAL_TS", ev.re.compile(r"(?!)"))
    yield "Xid counts ignored by the classifier", lambda: _patched(clf, "XID_COUNT_RE", ev.re.compile(r"(?!)"))
    yield "clock-event reasons bitmask not read", lambda: _patched(clf, "_clock_event_hits", lambda line, order: [])
    yield "several drives lost at once not read as the backplane", lambda: _patched(
        clf, "_drives_lost_with", lambda first, hits: set())
    yield "a replay report's replica not traced to its host", lambda: _patched(
        clf, "_replica_host", lambda first, ordered: None)
    yield "a recovered flap stays a cause", _recovered_flap_stays_a_cause
    yield "syslog host prefix ignored", lambda: _patched(ev, "SYSLOG_TS", ev.re.compile(r"(?!)"))
    for i in range(len(ev.HOST_FIELDS)):
        yield f"host field {ev.HOST_FIELDS[i].pattern[:60]}", lambda i=i: _without(ev.HOST_FIELDS, i)


@contextlib.contextmanager
def _recovered_flap_stays_a_cause() -> Iterator[None]:
    real = clf._cancel_recovered

    def keep_flaps(hits: list[Any], lines: list[Any]) -> list[Any]:
        return [h for h in real(hits, lines) if h.category != "network_switch_cable"] + [
            h for h in hits if h.category == "network_switch_cable"]

    with _patched(clf, "_cancel_recovered", keep_flaps):
        yield


@contextlib.contextmanager
def _weak_as_cause() -> Iterator[None]:
    saved_rules, saved_xids = list(rules.RULES), dict(rules.XID_TABLE)
    rules.RULES[:] = [dataclasses.replace(r, role="cause") if r.role == "weak" else r for r in saved_rules]
    rules.XID_TABLE.update({k: (c, s, "cause", w) for k, (c, s, role, w) in saved_xids.items() if role == "weak"})
    try:
        yield
    finally:
        rules.RULES[:] = saved_rules
        rules.XID_TABLE.clear()
        rules.XID_TABLE.update(saved_xids)


@contextlib.contextmanager
def _without_refine(pair: tuple[str, str]) -> Iterator[None]:
    clf.REFINES.discard(pair)
    try:
        yield
    finally:
        clf.REFINES.add(pair)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--only", help="run only mutations whose description contains this text")
    ap.add_argument("--patterns", action="store_true", help="also remove each rule's patterns one at a time")
    args = ap.parse_args()
    if _run() is not None:
        print("error: the tests fail before any mutation", file=sys.stderr)
        return 2
    survivors = 0
    for what, mutate in mutations(args.patterns):
        if args.only and args.only not in what:
            continue
        with mutate():
            caught = _run()
        survivors += caught is None
        print(json.dumps({"mutation": what, "caught_by": caught}), flush=True)
    print(json.dumps({"survivors": survivors}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
