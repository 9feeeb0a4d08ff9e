"""Which columns each on-call table shows, from the roomiest layout to the most compact.

`tables.render` picks the first layout that fits the terminal; `--wide` uses the
*_WIDE layout. Identifiers (job, host, category, kind, time, status) are whole in
every layout: a compact layout stacks two of them in one cell or moves a list
(hosts, ranks) to a labelled line under the row instead of cutting it.
"""

from __future__ import annotations

from orchestrator.catalog.db import as_utc
from orchestrator.catalog.models import Interruption
from orchestrator.cli.common import fmt_time, fmt_when
from orchestrator.cli.tables import Col


def rank_ranges(ranks: list[int]) -> str:
    """`0-3, 7, 9-10`: every rank named, runs shortened."""
    out: list[tuple[int, int]] = []
    for r in sorted(set(ranks)):
        if out and out[-1][1] == r - 1:
            out[-1] = (out[-1][0], r)
        else:
            out.append((r, r))
    return ", ".join(str(a) if a == b else f"{a}-{b}" for a, b in out) or "-"


def _kind(i: Interruption, sep: str) -> str:
    return i.kind + (f"{sep}(planned)" if i.planned and i.kind != "operator_stop" else "")


_ID = Col("id", lambda i: str(i.id), right=True)
_JOB = Col("job", lambda i: i.job_name)
_ATT = Col("att", lambda i: str(i.attempt), right=True)
_KIND = Col("kind", lambda i: _kind(i, "\n"))
_CATEGORY = Col("category", lambda i: i.category)
_RANKS = Col("ranks", lambda i: rank_ranges(i.ranks))
_HOSTS = Col("hosts", lambda i: "\n".join(i.hosts) or "-")
_WHEN = Col("detected", lambda i: fmt_when(as_utc(i.detected_at)))
_STATUS = Col("status", lambda i: i.status)
INCIDENT_LAYOUTS = [
    [_ID, _JOB, _ATT, _KIND, _CATEGORY, _RANKS, _HOSTS, _WHEN, _STATUS],
    [_ID, _JOB, _ATT, _KIND, _CATEGORY, _WHEN, _STATUS, Col("hosts", _HOSTS.cell, spill=True),
     Col("ranks", _RANKS.cell, spill=True)],
    [_ID, Col("job\natt", lambda i: f"{i.job_name}\n#{i.attempt}"),
     Col("category\nkind", lambda i: f"{i.category}\n{_kind(i, ' ')}"),
     Col("detected\nstatus", lambda i: f"{fmt_when(as_utc(i.detected_at))}\n{i.status}"),
     Col("hosts", _HOSTS.cell, spill=True), Col("ranks", _RANKS.cell, spill=True)],
    [_ID, Col("category\nkind", lambda i: f"{i.category}\n{_kind(i, ' ')}"),
     Col("detected\nstatus", lambda i: f"{fmt_when(as_utc(i.detected_at))}\n{i.status}"),
     Col("job", lambda i: f"{i.job_name} (attempt {i.attempt})", spill=True),
     Col("hosts", _HOSTS.cell, spill=True), Col("ranks", _RANKS.cell, spill=True)],
]
INCIDENT_WIDE = [
    _ID, _JOB, _ATT, Col("kind", lambda i: _kind(i, " ")), _CATEGORY, Col("component", lambda i: i.component),
    Col("conf", lambda i: f"{i.confidence:.2f}", right=True), _RANKS, Col("hosts", lambda i: ", ".join(i.hosts) or "-"),
    Col("detected", lambda i: fmt_time(as_utc(i.detected_at))),
    Col("resumed", lambda i: fmt_time(as_utc(i.resumed_at))),
    Col("steps lost", lambda i: "-" if i.steps_lost is None else str(i.steps_lost), right=True), _STATUS,
    Col("explanation", lambda i: " ".join((i.explanation or "").split()), wrap=True),
]


JOB_COLS = [Col("job", lambda j: j.name), Col("state", lambda j: j.state),
             Col("step", lambda j: f"{j.last_step}/{j.steps_total}", right=True),
             Col("loss", lambda j: "-" if j.last_loss is None else f"{j.last_loss:.4f}", right=True),
             Col("att", lambda j: str(j.current_attempt), right=True),
             Col("ranks", lambda j: str(j.world_size), right=True)]
_REASON = Col("reason", lambda j: " ".join((j.reason or "").split()), wrap=True)
JOB_LAYOUTS = [
    [*JOB_COLS, Col("submitted", lambda j: fmt_when(as_utc(j.submitted_at))), _REASON],
    [*JOB_COLS, Col("submitted", lambda j: fmt_when(as_utc(j.submitted_at))),
     Col("reason", _REASON.cell, spill=True)],
    [JOB_COLS[0], Col("state\natt", lambda j: f"{j.state}\n#{j.current_attempt}"),
     Col("step\nloss", lambda j: f"{JOB_COLS[2].cell(j)}\n{JOB_COLS[3].cell(j)}", right=True), JOB_COLS[5],
     Col("submitted", lambda j: fmt_when(as_utc(j.submitted_at))), Col("reason", _REASON.cell, spill=True)],
]
JOB_WIDE = [*JOB_COLS, Col("tok/s", lambda j: f"{j.tokens_per_second:,.0f}" if j.tokens_per_second else "-",
                            right=True),
            Col("submitted", lambda j: fmt_time(as_utc(j.submitted_at))),
            Col("started", lambda j: fmt_time(as_utc(j.started_at))),
            Col("ended", lambda j: fmt_time(as_utc(j.ended_at))), _REASON, Col("run dir", lambda j: j.run_dir)]


RANK_COLS = [Col("rank", lambda r: str(r["rank"]), right=True), Col("host", lambda r: r["host"] or "-"),
             Col("pid", lambda r: str(r["pid"] or "-"), right=True), Col("state", lambda r: r["state"]),
             Col("step", lambda r: str(r["step"]), right=True),
             Col("exit", lambda r: r["signal"] or ("-" if r["exit_code"] is None else str(r["exit_code"])))]
RANK_LAYOUTS = [RANK_COLS, [c for c in RANK_COLS if c.header != "pid"]]
RANK_WIDE = [*RANK_COLS, Col("log", lambda r: r["log"] or "-")]


_HOST = Col("host", lambda r: r["host"])
_HOST_STATE = Col("state", lambda r: r["state"])
_HW = Col("hw faults", lambda r: str(r["hardware_interruptions"]), right=True)
_LEMON = Col("lemon", lambda r: "yes" if r["lemon"] else "")
_HOST_REASON = Col("reason", lambda r: " ".join((r["reason"] or "").split()), wrap=True)
_SINCE = Col("since", lambda r: fmt_when(r["updated_at"]))
HOST_LAYOUTS = [
    [_HOST, _HOST_STATE, _HW, _LEMON, _SINCE, _HOST_REASON],
    [_HOST, _HOST_STATE, _HW, _LEMON, _SINCE, Col("reason", _HOST_REASON.cell, spill=True)],
    [_HOST, Col("state\nsince", lambda r: f"{r['state']}\n{_SINCE.cell(r)}"),
     Col("hw faults", lambda r: f"{r['hardware_interruptions']}" + (" lemon" if r["lemon"] else "")),
     Col("reason", _HOST_REASON.cell, spill=True)],
]
HOST_WIDE = [_HOST, _HOST_STATE, _HW, _LEMON, Col("node", lambda r: r["node_id"] or "-"),
             Col("address", lambda r: r["address"] or "-"), Col("updated", lambda r: fmt_time(r["updated_at"])),
             _HOST_REASON]
