"""`orchestrator incidents` and `orchestrator hosts`: the on-call view of the catalog."""

from __future__ import annotations

import getpass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table
from rich.text import Text

from orchestrator.catalog.db import CatalogError, as_utc
from orchestrator.catalog.models import Interruption
from orchestrator.catalog.repository import Catalog, NotFoundError
from orchestrator.classifier import classify
from orchestrator.cli.common import (
    EXIT_USAGE,
    DbOpt,
    JsonOpt,
    StateDirOpt,
    WideOpt,
    console,
    fail,
    fmt_time,
    fmt_when,
    no_conflict,
    open_catalog,
    print_json,
)
from orchestrator.cli.layouts import HOST_LAYOUTS, HOST_WIDE, INCIDENT_LAYOUTS, INCIDENT_WIDE, rank_ranges
from orchestrator.cli.tables import Col, print_table
from orchestrator.hosts import lemon_hosts
from orchestrator.taxonomy import CATEGORIES, component_of

incidents_app = typer.Typer(no_args_is_help=True, help="Interruptions: list, show, ack, resolve, reclassify.")
hosts_app = typer.Typer(no_args_is_help=True, help="Hosts: list, cordon, uncordon.")

IdArg = Annotated[int, typer.Argument(help="Incident id", min=1, max=2**31 - 1)]
ByOpt = Annotated[str | None, typer.Option("--by", help="Who acts (default: the current user)")]
NoteOpt = Annotated[str | None, typer.Option("--note", help="A note for the record")]


def _user(by: str | None) -> str:
    if by:
        return by
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return "unknown"


def incident_dict(i: Interruption, *, full: bool = False) -> dict[str, Any]:
    d: dict[str, Any] = {
        "id": i.id, "job": i.job_name, "attempt": i.attempt, "kind": i.kind, "planned": i.planned,
        "category": i.category, "component": i.component, "confidence": i.confidence,
        "explanation": i.explanation, "ranks": i.ranks, "hosts": i.hosts, "gpus": i.gpus,
        "status": i.status, "fault_at": as_utc(i.fault_at), "detected_at": as_utc(i.detected_at),
        "stopped_at": as_utc(i.stopped_at), "resumed_at": as_utc(i.resumed_at),
        "step_at_fault": i.step_at_fault, "resume_step": i.resume_step, "steps_lost": i.steps_lost,
    }
    if full:
        d.update(acknowledged_by=i.acknowledged_by, acknowledged_at=as_utc(i.acknowledged_at),
                 resolved_by=i.resolved_by, resolved_at=as_utc(i.resolved_at), notes=i.notes,
                 classification_history=i.classification_history, evidence=i.evidence,
                 evidence_text=i.evidence_text)
    return d


def _since(text: str | None) -> datetime | None:
    if text is None:
        return None
    units = {"m": 60, "h": 3600, "d": 86400, "w": 604800}
    if text[-1:] in units and text[:-1].isdigit():
        try:
            return datetime.now(UTC) - timedelta(seconds=int(text[:-1]) * units[text[-1]])
        except OverflowError:
            fail(f"--since: {text!r} reaches back before the year 1", EXIT_USAGE)
    try:
        dt = datetime.fromisoformat(text)
    except ValueError:
        fail(f"--since: {text!r} is neither a duration (30m, 12h, 7d) nor an ISO date", EXIT_USAGE)
    return dt if dt.tzinfo else dt.replace(tzinfo=UTC)


@incidents_app.command("list")
def list_(
    job: Annotated[str | None, typer.Option("--job", help="Only this job")] = None,
    category: Annotated[str | None, typer.Option("--category", help="Only this category")] = None,
    since: Annotated[str | None, typer.Option("--since", help="Only since: 30m, 12h, 7d or an ISO date")] = None,
    open_only: Annotated[bool, typer.Option("--open", help="Only incidents not resolved")] = False,
    db: DbOpt = None, state_dir_opt: StateDirOpt = None, json_out: JsonOpt = False, wide: WideOpt = False,
) -> None:
    """Interruptions, oldest first."""
    no_conflict(json_out, wide)
    if category is not None and category not in CATEGORIES:
        fail(f"--category: unknown category {category!r}; choose one of {', '.join(CATEGORIES)}", EXIT_USAGE)
    after = _since(since)
    cat = open_catalog(state_dir_opt, db, must_exist=True)
    if job is not None:
        _guard(lambda: cat.require_job(job))
    rows = _guard(lambda: cat.interruptions(job, since=after, category=category, open_only=open_only))
    if json_out:
        print_json([incident_dict(i) for i in rows])
        return
    print_table(console, [INCIDENT_WIDE] if wide else INCIDENT_LAYOUTS, rows, wide=wide)


def _guard(fn: Any) -> Any:
    try:
        return fn()
    except NotFoundError as e:
        fail(str(e).strip('"'), EXIT_USAGE)
    except CatalogError as e:
        fail(str(e))


@incidents_app.command()
def show(incident: IdArg, db: DbOpt = None, state_dir_opt: StateDirOpt = None, json_out: JsonOpt = False) -> None:
    """Everything recorded about one interruption."""
    cat = open_catalog(state_dir_opt, db, must_exist=True)
    i = _guard(lambda: cat.get_interruption(incident))
    d = incident_dict(i, full=True)
    if json_out:
        print_json(d)
        return
    grid = Table.grid(padding=(0, 2))
    grid.add_column(justify="right", style="bold", no_wrap=True)
    grid.add_column(overflow="fold")
    for k in ("id", "job", "attempt", "kind", "planned", "category", "component", "confidence", "explanation",
              "ranks", "hosts", "gpus", "status", "fault_at", "detected_at", "stopped_at", "resumed_at",
              "step_at_fault", "resume_step", "steps_lost", "acknowledged_by", "resolved_by"):
        grid.add_row(k, Text(_show_value(k, d[k])))
    for n in d["notes"]:
        grid.add_row("note", Text(f"{n.get('at')} {n.get('by')}: {n.get('text')}"))
    for h in d["classification_history"]:
        grid.add_row("reclassified", Text(f"{h.get('at')} {h.get('by')}: {h.get('from')} -> {h.get('to')}"))
    console.print(grid)
    if d["evidence_text"]:
        console.print("[bold]evidence[/bold]")
        console.print(d["evidence_text"][-3000:], highlight=False, markup=False)


def _show_value(key: str, v: Any) -> str:
    if v is None:
        return "-"
    if key == "ranks":
        return rank_ranges(v)
    if isinstance(v, list):
        return ", ".join(map(str, v)) or "-"
    if isinstance(v, datetime):
        ago = fmt_when(v)
        return fmt_time(v) + (f" ({ago})" if ago.endswith("ago") else "")
    return str(v)


def _now() -> str:
    return datetime.now(UTC).isoformat()


def _advance(incident: int, by: str | None, note: str | None, db: str | None, sd: Any, action: str) -> str:
    """Move an incident along its workflow (ack or resolve), keeping the note."""
    cat = open_catalog(sd, db, must_exist=True)
    i = _guard(lambda: cat.get_interruption(incident))
    who, now = _user(by), datetime.now(UTC)
    notes = list(i.notes) + ([{"at": now.isoformat(), "by": who, "text": note}] if note else [])
    if action == "ack":
        fields = {"status": "acknowledged" if i.status == "open" else i.status, "acknowledged_by": who,
                  "acknowledged_at": now}
    else:
        fields = {"status": "resolved", "resolved_by": who, "resolved_at": now}
    _guard(lambda: cat.update_interruption(incident, notes=notes, **fields))
    return who


@incidents_app.command()
def ack(incident: IdArg, by: ByOpt = None, note: NoteOpt = None, db: DbOpt = None,
        state_dir_opt: StateDirOpt = None) -> None:
    """Acknowledge an incident."""
    who = _advance(incident, by, note, db, state_dir_opt, "ack")
    console.print(f"incident {incident} acknowledged by {who}", markup=False)


@incidents_app.command()
def resolve(incident: IdArg, by: ByOpt = None, note: NoteOpt = None, db: DbOpt = None,
            state_dir_opt: StateDirOpt = None) -> None:
    """Resolve an incident."""
    who = _advance(incident, by, note, db, state_dir_opt, "resolve")
    console.print(f"incident {incident} resolved by {who}", markup=False)


@incidents_app.command()
def reclassify(incident: IdArg, category: Annotated[str, typer.Argument(help="New category")], by: ByOpt = None,
               note: NoteOpt = None, db: DbOpt = None, state_dir_opt: StateDirOpt = None) -> None:
    """Correct the category; the original stays in the classification history."""
    try:
        component = component_of(category)
    except ValueError as e:
        fail(str(e), EXIT_USAGE)
    cat = open_catalog(state_dir_opt, db, must_exist=True)
    i = _guard(lambda: cat.get_interruption(incident))
    who = _user(by)
    history = list(i.classification_history) + [{
        "at": _now(), "by": who, "from": i.category, "to": category, "from_confidence": i.confidence,
        "note": note}]
    _guard(lambda: cat.update_interruption(incident, category=category, component=component, confidence=1.0,
                                           classification_history=history))
    console.print(f"incident {incident} reclassified {i.category} -> {category}", markup=False)


@incidents_app.command("classify")
def classify_files(files: Annotated[list[Path], typer.Argument(help="Evidence files (log excerpts)")],
                   json_out: JsonOpt = False, wide: WideOpt = False) -> None:
    """Classify evidence files offline (no catalog, no cluster)."""
    no_conflict(json_out, wide)
    out = []
    for f in files:
        try:
            text = f.read_text(errors="replace")
        except OSError as e:
            fail(f"{f}: cannot read: {e.strerror or e}", EXIT_USAGE)
        out.append({"file": str(f), **classify(text).to_dict()})
    if json_out:
        print_json(out)
        return
    cols = [Col("file", lambda r: r["file"]), Col("category", lambda r: r["category"]),
            Col("component", lambda r: r["component"]), Col("conf", lambda r: f"{r['confidence']:.2f}", right=True),
            Col("why", lambda r: " ".join(r["explanation"].split()), wrap=True)]
    compact = [cols[0], Col("category\ncomponent", lambda r: f"{r['category']}\n{r['component']}"), cols[3],
               cols[4]]
    why = Col("why", cols[4].cell, spill=True)
    layouts = [cols, compact, [*compact[:3], why], [*compact[1:3], Col("file", cols[0].cell, spill=True), why]]
    print_table(console, [cols] if wide else layouts, out, wide=wide)


# ---- hosts ------------------------------------------------------------------------------
@hosts_app.command("list")
def hosts_list(db: DbOpt = None, state_dir_opt: StateDirOpt = None, json_out: JsonOpt = False,
               wide: WideOpt = False) -> None:
    """Every host the catalog knows, its state and its hardware interruptions."""
    no_conflict(json_out, wide)
    cat = open_catalog(state_dir_opt, db, must_exist=True)
    hosts = _guard(cat.hosts)
    lemons = _guard(lambda: lemon_hosts(cat))
    rows = [{"host": h.name, "state": h.state, "reason": h.reason, "node_id": h.node_id, "address": h.address,
             "hardware_interruptions": lemons.counts.get(h.name, 0), "lemon": h.name in lemons.lemons,
             "updated_at": as_utc(h.updated_at)} for h in hosts]
    if json_out:
        print_json(rows)
        return
    print_table(console, [HOST_WIDE] if wide else HOST_LAYOUTS, rows, wide=wide)


def _set_host(host: str, state: str, reason: str | None, by: str | None, db: str | None, sd: Any) -> Catalog:
    cat = open_catalog(sd, db, must_exist=True)
    _guard(lambda: cat.set_host_state(host, state, reason=reason, actor=_user(by)))
    return cat


K8sOpt = Annotated[bool | None, typer.Option(
    "--k8s/--no-k8s", help="Also cordon/uncordon the Kubernetes node of that name "
    "(default: on when ORCHESTRATOR_K8S_REMEDIATION=1)")]


def _remediate_node(host: str, cordoning: bool, reason: str, k8s: bool | None) -> None:
    """Carry the catalog's decision over to the Kubernetes node; one line and exit 1 when the API refuses."""
    from orchestrator.k8s.callback import enabled

    if not (enabled() if k8s is None else k8s):
        return
    from orchestrator.k8s.nodes import NodeRemediator, RemediationError

    try:
        nodes = NodeRemediator.from_environment()
        if cordoning:
            nodes.cordon(host, category="operator", reason=reason)
        else:
            nodes.uncordon(host, reason=reason)
    except RemediationError as e:
        fail(f"{e} (the catalog already has host {host} {'cordoned' if cordoning else 'uncordoned'}; "
             "run the command again to finish)")


@hosts_app.command()
def cordon(host: Annotated[str, typer.Argument(help="Host name")],
           reason: Annotated[str | None, typer.Option("--reason")] = None, by: ByOpt = None,
           db: DbOpt = None, state_dir_opt: StateDirOpt = None, k8s: K8sOpt = None) -> None:
    """Keep a host out of every placement until it is uncordoned."""
    why = reason or "cordoned by the operator"
    _set_host(host, "cordoned", why, by, db, state_dir_opt)
    _remediate_node(host, True, f"{why} ({_user(by)})", k8s)
    console.print(f"host {host} cordoned", markup=False)


@hosts_app.command()
def uncordon(host: Annotated[str, typer.Argument(help="Host name")],
             reason: Annotated[str | None, typer.Option("--reason")] = None, by: ByOpt = None,
             db: DbOpt = None, state_dir_opt: StateDirOpt = None, k8s: K8sOpt = None) -> None:
    """Return a host to service (recorded as repaired)."""
    why = reason or "returned to service by the operator"
    _set_host(host, "repaired", why, by, db, state_dir_opt)
    _remediate_node(host, False, f"{why} ({_user(by)})", k8s)
    console.print(f"host {host} uncordoned", markup=False)
