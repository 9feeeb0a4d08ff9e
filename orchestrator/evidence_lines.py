"""Evidence text as lines the classifier can order and attribute: time, host, and what never decides.

Evidence arrives as log excerpts from several sources and hosts (rank logs, dmesg
or the journal, ipmitool SEL, NVML and DCGM output). The classifier reads them
in time order, so each line gets the wall-clock time it carries (ISO 8601,
syslog, glog as PyTorch writes it, ipmitool's `MM/DD/YYYY | HH:MM:SS`), or the
time of the line before it (journal JSON's `__REALTIME_TIMESTAMP` too). Hosts
come only from host fields: `host=`/`hostname`/`instance=` fields, JSON's
`"host"` and the journal's `"_HOSTNAME"`, a syslog line's host prefix, NCCL's
`host:pid:tid` prefix, a Ray node label or worker prefix, a Kubernetes
`node/<name>`, slurmctld's node, Python logging's `LEVEL [host] prog:`, a
program tag holding a host (`kern[host]:`), pdsh's `host: ` prefix (also in
front of syslog), a leading `[host]` alone or after the line's time, an
export's host column beside its time column, RFC 5424's HOSTNAME, a table's
host column, or a header line that names only a host for the lines below it.
Ordinary words and paths are never read as hosts.

Lines that must never decide a category are marked here (corrected errors,
single-bit ECC counts, cleared SEL events, a job's own planned stop), and spans
that say nothing was found or a count is zero ("NVLink errors: 0", "Pending: No",
"no link down detected") are blanked out. A check that passed, a configuration
dump or a category's name used as a word ("SDC check passed", "IO expansion
board status OK") names no fault, and every rule requires one, so none decides.
"""

from __future__ import annotations

import csv
import re
from dataclasses import dataclass
from datetime import UTC, datetime

_MONTHS = {m: i + 1 for i, m in enumerate(("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov",
                                            "Dec"))}
_HOSTNAME = r"[A-Za-z0-9][A-Za-z0-9_.-]*[A-Za-z0-9]"
_LEVELS = {"INFO", "WARN", "WARNING", "ERROR", "DEBUG", "CRITICAL", "FATAL", "NOTICE", "TRACE", "ERR", "CRIT"}

ISO_TS = re.compile(r"(?<!\d)(?P<y>\d{4})([-/])(?P<mo>\d{2})\2(?P<d>\d{2})[T ](?P<h>\d{2}):(?P<mi>\d{2}):(?P<s>\d{2})"
                    r"(?P<frac>\.\d+)?(?P<tz>Z|[+-]\d{2}:?\d{2})?")
_NOT_A_HOST = (r"(?!(?i:(?:nvme|sd[a-z]|md|ibp?|eth|en[ops]|mlx\d_?|bond|gpu|cpu|mc|dimm|cuda|v)\d|"
               r"(?:rank|step|epoch|port|bank|card|slot|socket|core|lane|psu|fan)[-_]?\d|(?:GPU|MIG)-[0-9a-f]{8}-|"
               r"0x[0-9a-f]|k[38]s-|[\w.-]*thread))"
               r"(?![\w.-]*\.(?i:py|cc|cpp|h|c|so|log|json|ya?ml|txt|sh|csv|bin|pt)\b)")
"""Not a host where a prefix or a column could hold one: a device (`nvme0n1`, `mlx5_0`, `GPU3`, a GPU's UUID), a rank,
a sensor, a hex value, a version or a file name."""
_LABEL_HOST = rf"{_NOT_A_HOST}(?=[A-Za-z0-9.-]*[A-Za-z])(?=[A-Za-z0-9.-]*\d)[A-Za-z0-9][A-Za-z0-9.-]*[A-Za-z0-9]"
"""A host name in a prefix or a column: DNS characters only (so never `mlx5_0` or `xid_79`), a letter and a digit."""
SYSLOG_TS = re.compile(rf"^(?:<\d+>)?(?:(?P<pre>{_LABEL_HOST}):?[ \t]+)?"
                       r"(?P<mon>Jan|Feb|Mar|Apr|May|Jun|Jul|Aug|Sep|Oct|Nov|Dec)\s+(?P<d>\d{1,2})\s+"
                       r"(?P<h>\d{2}):(?P<mi>\d{2}):(?P<s>\d{2})(?P<frac>\.\d+)?\s+"
                       rf"(?:(?P<host>{_HOSTNAME})\s+)?(?P<proc>[^\s:]+:)")
"""RFC 3164 syslog (`Nov 29 05:40:01 r21n03 kernel: ...`); also behind a pdsh prefix or an exporter's host column
(`r21n03: Nov 29 ...`, `node-d-1102 Nov 29 04:12:40 kernel: ...`), where the prefix names the host when the line has
no host column of its own."""
GLOG_TS = re.compile(r"(?:^|[\s\[:])[IWEF](?P<mo>\d{2})(?P<d>\d{2}) (?P<h>\d{2}):(?P<mi>\d{2}):(?P<s>\d{2})"
                     r"(?P<frac>\.\d+)?")
DMESG_T = re.compile(r"^\[(?:Mon|Tue|Wed|Thu|Fri|Sat|Sun) (?P<mon>Jan|Feb|Mar|Apr|May|Jun|Jul|Aug|Sep|Oct|Nov|Dec)\s+"
                     r"(?P<d>\d{1,2}) (?P<h>\d{2}):(?P<mi>\d{2}):(?P<s>\d{2}) (?P<y>\d{4})\]")
SEL_TS = re.compile(r"\|\s*(?P<mo>\d{2})/(?P<d>\d{2})/(?P<y>\d{4})\s*\|\s*(?P<h>\d{2}):(?P<mi>\d{2}):(?P<s>\d{2})")
_TS_CELL = r"\d{4}-\d{2}-\d{2}[T ]\d{2}:\d{2}:\d{2}(?:[.,]\d+)?(?:Z|[+-]\d{2}:?\d{2})?"
ISO_HOST = re.compile(rf"^\s*\S*?\d{{4}}-\d{{2}}-\d{{2}}[T ]\d{{2}}:\d{{2}}:\d{{2}}\S*\s+(?P<host>{_HOSTNAME})\s+"
                      r"[\w.()/@-]+(?:\[\d+\])?:\s")

_BRACKET_HOST = (rf"(?!(?:rank|local_rank|pid|tid|thread|process|worker|gpu|cuda|pg)[-_ ]?\d){_NOT_A_HOST}"
                 rf"(?=[\w.-]*\d)(?=[\w.-]*[A-Za-z][\w.-]*[-.])(?P<host>{_HOSTNAME})")
"""A host in brackets where a pid or a logger's name could also stand: it has a digit and a `-` or `.`
(`node-b-0142`, `ip-172-31-88-214`), and it is not a rank, thread or device (`rank0`, `Thread-1`)."""
HOST_FIELDS = [
    # key=value fields; `instance` is the cloud instance or Prometheus target the line is about
    re.compile(rf"\b(?:host|hostname|host_name|node[_-]?name|node|instance)\s*=\s*[\"']?(?P<host>{_HOSTNAME})",
               re.IGNORECASE),
    # JSON and YAML fields, also systemd journal JSON's `"_HOSTNAME"` (journalctl -o json)
    re.compile(rf"(?:^|[\s{{,\[(])[\"']?_?(?:hostname|host|node[_-]?name)[\"']?\s*:\s*[\"']?(?P<host>{_HOSTNAME})",
               re.IGNORECASE),
    re.compile(rf"(?:^|[\s\]:])(?P<host>{_HOSTNAME}):\d+:\d+ \[\d+\] NCCL\b"),  # NCCL's host:pid:tid prefix
    re.compile(r"\((?:[^()]*?,\s*)?ip=(?P<host>\d{1,3}(?:\.\d{1,3}){3})\)"),  # Ray log prefix: (raylet, ip=...)
    re.compile(r"\bnode_ip(?:_address)?[\"']?\s*[=:]\s*[\"']?(?P<host>\d{1,3}(?:\.\d{1,3}){3})"),
    re.compile(r"\bnode:(?P<host>\d{1,3}(?:\.\d{1,3}){3})\b"),  # Ray's node resource label
    # a Kubernetes node object (`node/gpu-c02-33` in events and kubectl output); slurmctld naming the node it acts on
    re.compile(rf"(?<![\w/.~-])node/(?P<host>{_HOSTNAME})\b"),
    re.compile(rf"(?:_slurm_rpc_\w+|update_node|reboot request)\b.{{0,40}}?\bnodes? (?P<host>{_HOSTNAME})(?![\w\[,-])"),
    # Python logging with the host in brackets after the level: `WARNING [node-b-0142] dcgm: ...`
    re.compile(rf"(?:^|\s)(?:INFO|WARN(?:ING)?|ERROR|ERR|DEBUG|CRIT(?:ICAL)?|FATAL|NOTICE)\s+\[{_BRACKET_HOST}\]\s+"
               r"[\w.@/-]+(?:\[\d+\])?:\s", re.IGNORECASE),
    # a program tag whose brackets hold the host, not a pid: `kern[ip-172-31-88-214]: ...`
    re.compile(rf"(?:^|\s)[A-Za-z][\w.@/-]*\[{_BRACKET_HOST}\]:\s", re.IGNORECASE),
    # pdsh/clush output: every line starts `host: `; only names with a `-` or `.` that end in a digit (node-17,
    # dgx-b12), so that a facility (`mce:`, `NVRM:`), a program (`k8s-device-plugin:`) or a device (`nvme0n1:`,
    # `ata1.00:`) is never read as one
    re.compile(r"^(?!(?:nvme|ata|sd[a-z]|md|ib|eth|en[ops]|mlx5|bond)\w*[:.])"
               r"(?P<host>(?=[\w.-]*[a-z][\w.-]*[-.])[A-Za-z][A-Za-z0-9_.-]*\d):[ \t]",
               re.IGNORECASE),
    # a leading host in brackets, alone (clush/pdsh output collected as `[host] line`) or after the line's timestamp,
    # bracketed or not, and its level: `[hgx-07.dc2.example.net]   DRAM Uncorrectable : 2`,
    # `[2026-11-29 08:00:05] [hgx-b2-17] health-agent: ...`, `2026-11-29 02:00:00,000 [node-f-0033] bmc: ...`
    re.compile(rf"^\s*(?:\[?{_TS_CELL}\]?\s+(?:(?:INFO|WARN(?:ING)?|ERROR|ERR|DEBUG|CRIT(?:ICAL)?|FATAL|NOTICE)\s+)?)?"
               rf"\[{_BRACKET_HOST}\]:?\s", re.IGNORECASE),
    # an export's host column beside its time column, without a header in the excerpt (`|`, CSV or TSV):
    # `gpu-d11 | 2026-11-29 01:03:10 | INFO | ...`, `2026-11-29T12:05:02Z,ip-172-31-9-44,5,...`
    re.compile(rf"^\s*\|?\s*(?P<host>{_LABEL_HOST})[ ]*(?P<sep>[|,\t])\s*\[?{_TS_CELL}\]?[ ]*(?P=sep)"),
    re.compile(rf"^\s*\|?\s*\[?{_TS_CELL}\]?[ ]*(?P<sep>[|,\t])\s*(?P<host>{_LABEL_HOST})[ ]*(?P=sep)"),
    # RFC 5424 syslog: `<PRI>VERSION TIMESTAMP HOSTNAME APP-NAME PROCID MSGID ...`
    re.compile(rf"^<\d{{1,3}}>\d{{1,2}} \S+ (?P<host>{_HOSTNAME}) "),
]
HEADER_ONLY = re.compile(r"^[\s#=\-*\[<>]*(?:host|hostname|node)\s*[=:]\s*\S+(?:[\s,;|]+[\w.=/:-]+){0,8}[\s=\-*\]>]*$",
                         re.IGNORECASE)
"""A header that names a host (and perhaps its source) for the lines below it: `== host=node-17 source=dmesg ==`."""

# Lines that never decide: cleared SEL events, single-bit (corrected) ECC counts, a job's own planned stop.
# Configuration dumps (ProcessGroupNCCL's `TIMEOUT(ms): 600000`, NCCL's `NCCL_IB_TIMEOUT` echo) need no filter:
# every rule names a fault, and the tests hold those lines to `unknown`.
NEVER_DECIDES = [
    re.compile(p, re.IGNORECASE) for p in (
        r"\bDeasserted\b",
        r"\bsingle[- ]bit\b(?!.{0,60}\b(?:double|uncorrect))",
        r"\b(?:(?:planned|scheduled|requested) (?:stop|shutdown)|stop requested by|orchestrator stop|"
        r"(?:cancell?ed|stopped) by (?:user|operator|owner)|scancel)\b",
    )
]
CORRECTED = re.compile(r"(?<![Uu]n)(?<![Nn]on-)\bcorrect(?:ed|able)\b|\b[1-9]\d* CE\b|\bSBEs?\b", re.IGNORECASE)
UNCORRECTED = re.compile(r"\b(?:uncorrect\w*|non-?correctable|UE|DBE|double[- ]bit|fatal)\b", re.IGNORECASE)
BLANKED = [
    re.compile(p, re.IGNORECASE) for p in (
        # a counter's zero given per device after its name: "DBE volatile GPU1=0"
        r"\b(?:SBEs?|DBEs?|UE|CE|errors?|uncorrect\w*)(?: \(?(?:volatile|aggregate)\)?)? [\w.-]+\s*=\s*0+(?![.\d])\b",
        r"\b[\w.-]+\s*=\s*(?:no|none|false|inactive)\b",
        r"\b[\w.-]+\s*=\s*0+(?![.\d])\b", r"^\s*[\w /()-]+?\s*:\s*0+\s*$",
        r"\bno (?:[\w-]+ ){0,3}?(?:errors?|faults?|failures?|mismatch(?:es)?|miscompares?|issues?|problems?|corruption|"
        r"events?)"
        r"(?: (?:found|detected|reported|logged|seen))?\b",
        r"\bno (?!(?:IB )?devices)(?:[\w-]+ ){0,3}?(?:detected|found|seen|reported)\b",
        r"\bnone (?:detected|found|seen|reported)\b",
        r"\b0+ (?:of|/) ?\d+ (?:[\w-]+ ){0,2}(?:failed|errors?|mismatch\w*)",
        r"(?<![.:])\b0+ (?:\w+ )?(?:errors?|failures?|mismatch(?:es)?|faults?|events?|UE|CE|DBEs?|SBEs?|"
        r"retired pages?)\b",
        r"\b(?:[\w/-]+ ){0,3}[\w/-]*(?:errors?|counts?|counter|mismatch(?:es)?|failures?|uncorrect\w*|"
        r"correct(?:ed|able)|UE|CE|DBE|SBE|pending|total|retired|remapped|events?|parity|SEC-DED|"
        r"(?:single|double)[- ]bit)"
        r"(?: \(?(?:volatile|aggregate)\)?)?(?: (?:count|value|total))?\s*[:=.]*\s*0+(?![.\d:xX])\b"
        r"(?!\s*(?:->|=>|\u2192))",
        # nvidia-smi -q pads a field's name to a column: `SRAM Uncorrectable Parity     : 0`, also after a log prefix.
        r"(?<![\w-])(?:[A-Za-z(][\w()/.-]*[ ]){0,4}[A-Za-z(][\w()/.-]*(?:[ ]{2,}|\t+)\s*:\s*0+\s*(?=$|[,;|)\]])",
        r"\b[\w ]{1,40}:\s*(?:No|None|Not Active|False|Inactive)\s*(?=$|[,;|)])",
        # A list of what might have happened names no fault (Ray's "There are some potential root causes. (1) ...
        # killed by SIGKILL by OOM killer ... (3) ... crashed unexpectedly due to SIGSEGV").
        r"\b(?:potential|possible) (?:root )?causes?\b.*$",
        # A status that says all is well names no fault, whatever it is about: "IO expansion board status OK",
        # "power supply redundancy OK", "SMART ... result: PASSED", a diag table's `| PCIe | Pass |`.
        # ("forward pass" and "not OK" are not such statuses)
        r"[A-Za-z][\w /-]{0,60}?(?:\s*[:=]\s*|\s+)(?<![Nn]ot )(?<!NOT )(?:ok|healthy|passed|(?-i:PASS|Pass))\b"
        r"(?!\s*(?:->|=>))",
        # An event that was looked for and not seen: "chassis intrusion: not detected" (a device "not detected" is
        # still a fault).
        r"\b(?:intrusion|tamper\w*|leak|fault|error|failure|alarm)s?\s*[:=]\s*not detected\b",
    )
]
RECOVERED = re.compile(r"\b(?:recovered|recovery (?:succeeded|complete[d]?)|back online|restored|resumed normally|"
                       r"retry succeeded|succeeded (?:on|after) (?:retry|\d+ retr))\b|\bnfs: server \S+ OK\b",
                       re.IGNORECASE)
SUBJECT = re.compile(r"\b(?:nvme\d+(?:n\d+)?|mlx5_\d+|ib\d+|ibp\d+s\d+\w*|eth\d+|en[ops]\w+|sd[a-z]+|"
                     r"[0-9a-f]{4}:[0-9a-f]{2}:[0-9a-f]{2}\.\d)\b|(?<=server )[\w.-]+", re.IGNORECASE)


@dataclass(frozen=True, slots=True)
class Line:
    """One evidence line: where it sits, when it happened, which host said it, and the text the rules read."""

    index: int
    raw: str
    text: str  # with passed/zero-count spans blanked; empty when the line never decides
    time: datetime | None  # the line's own or inherited time (UTC, naive)
    own_time: bool  # True when the line carries its own timestamp
    host: str | None
    recovery: bool  # says an earlier warning was retried and recovered
    fields: str = ""  # a table row as `column=value` fields, before anything is blanked


def _year_hint(text: str) -> int:
    m = ISO_TS.search(text) or SEL_TS.search(text)
    return int(m.group("y")) if m else 2000


JOURNAL_TS = re.compile(r"\"__REALTIME_TIMESTAMP\"\s*:\s*\"?(?P<us>\d{13,17})")
"""systemd journal JSON (`journalctl -o json`): microseconds since the epoch, as a string."""


def _timestamp(line: str, year: int) -> datetime | None:
    try:
        if m := JOURNAL_TS.search(line):
            return datetime.fromtimestamp(int(m.group("us")) / 1e6, UTC).replace(tzinfo=None)
        if m := ISO_TS.search(line):
            t = datetime.fromisoformat(m.group(0).replace("/", "-").replace(" ", "T", 1).replace("Z", "+00:00"))
            return t.astimezone(UTC).replace(tzinfo=None) if t.tzinfo else t
        if m := SYSLOG_TS.search(line):
            return datetime(year, _MONTHS[m.group("mon")], int(m.group("d")), int(m.group("h")), int(m.group("mi")),
                            int(m.group("s")), int(float(m.group("frac") or 0) * 1e6))
        if m := DMESG_T.search(line):
            return datetime(int(m.group("y")), _MONTHS[m.group("mon")], int(m.group("d")), int(m.group("h")),
                            int(m.group("mi")), int(m.group("s")))
        if m := SEL_TS.search(line):
            return datetime(int(m.group("y")), int(m.group("mo")), int(m.group("d")), int(m.group("h")),
                            int(m.group("mi")), int(m.group("s")))
        if m := GLOG_TS.search(line):
            return datetime(year, int(m.group("mo")), int(m.group("d")), int(m.group("h")), int(m.group("mi")),
                            int(m.group("s")), int(float(m.group("frac") or 0) * 1e6))
    except ValueError:
        return None
    return None


def _valid_host(h: str | None) -> str | None:
    if not h or h.upper() in _LEVELS or h.isdigit() or not re.search(r"[A-Za-z]|\d\.\d", h):
        return None
    return h


def host_of(line: str) -> str | None:
    """The host a line names in a host field, or None; never a host taken from ordinary words."""
    if (m := SYSLOG_TS.search(line)) and (h := _valid_host(m.group("host") or m.group("pre"))):
        return h
    if (m := ISO_HOST.search(line)) and (h := _valid_host(m.group("host"))):
        return h
    for rx in HOST_FIELDS:
        if (m := rx.search(line)) and (h := _valid_host(m.group("host"))):
            return h
    return None


def never_decides(line: str) -> bool:
    if any(rx.search(line) for rx in NEVER_DECIDES):
        return True
    return bool(CORRECTED.search(line)) and not UNCORRECTED.search(line)


def blank_benign(line: str) -> str:
    for rx in BLANKED:
        line = rx.sub(" ", line)
    return line


def decidable_text(line: str) -> str:
    """What the rules read of a line: empty when it never decides, else with passed and zero-count spans blanked.

    Zero counts are blanked before the line is judged, so that "single-bit 3 (corrected), double-bit 0" is the
    corrected line it is and the zero cannot make it look uncorrected.
    """
    blanked = blank_benign(line)
    return "" if never_decides(blanked) else blanked


def subjects(line: str) -> set[str]:
    """Device and server names a line is about (nvme0, mlx5_2, a PCI address, an NFS server)."""
    return {m.group(0).lower() for m in SUBJECT.finditer(line)}


TABLE_HOST_COLUMNS = {"hostname", "host", "host_name", "node", "nodename", "node_name", "instance"}
TABLE_TIME = {"time", "timestamp", "date", "ts"}
TABLE_CELL = re.compile(r"[A-Za-z_][\w.()/-]*")
GHES_RECORD = re.compile(r"\{(?P<rec>\d+)\}\[Hardware Error\]:")
GHES_SEVERITY = re.compile(r"event severity:\s*(?P<sev>\w+)")
GHES_NO_FAULT = {"corrected", "info"}


def _cells(line: str, sep: str) -> list[str]:
    """A row's cells: `|` tables split on every bar; CSV and TSV as the csv module reads them (quoted cells keep their
    commas: `"link retraining 3 times in 60s; cable module high BER, replace cable"`)."""
    if sep == "|":
        return [c.strip() for c in line.strip().strip("|").split("|")]
    return [c.strip() for c in next(csv.reader([line.strip()], delimiter=sep, skipinitialspace=True), [])]


def _table_header(line: str) -> tuple[list[str], int, str] | None:
    """A CSV, TSV or `|` table header with a host column (`hostname,gpu_bus_id,xid_79,...`): its columns, the host's
    and the separator the rows below use."""
    sep = "\t" if "\t" in line else "|" if "|" in line else ","
    cells = _cells(line, sep)
    if len(cells) < 3 or not all(TABLE_CELL.fullmatch(c) for c in cells):
        return None
    names = [c.lower() for c in cells]
    idx = next((i for i, c in enumerate(names) if c in TABLE_HOST_COLUMNS), None)
    return (cells, idx, sep) if idx is not None else None


def parse(text: str) -> list[Line]:
    """Evidence lines with their time (own or inherited from the line before), host and decidable text.

    A table under a header that has a host column (CSV, tab- or pipe-separated) gives each row the host in that
    column, and the rules read the row as `column=value` fields, so that a zero count blanks and a non-zero one
    stays. A kernel APEI/GHES record (`{N}[Hardware Error]: ...` over several lines) whose event severity is
    corrected never decides.
    """
    raw_lines = text.splitlines()
    year = _year_hint(text)
    stamps = [_timestamp(s, year) for s in raw_lines]
    first = next((t for t in stamps if t is not None), None)
    out: list[Line] = []
    current, header_host = first, None
    table: tuple[list[str], int, str] | None = None
    ghes: dict[tuple[str | None, str], str] = {}
    for i, (s, t) in enumerate(zip(raw_lines, stamps, strict=True)):
        if t is not None:
            current = t
        if (table and len(cells := _cells(s, table[2])) == len(table[0])
                and (t is None or table[0][0].lower() in TABLE_TIME)):
            columns, at, _ = table
            fields = " ".join(f"{c}={v}" for c, v in zip(columns, cells, strict=True))
            host = _valid_host(cells[at])
            out.append(Line(i, s, decidable_text(fields), current, t is not None, host, False, fields))
            continue
        table = _table_header(s) if t is None else None
        if table:
            out.append(Line(i, s, "", current, False, None, False))
            continue
        host = host_of(s)
        if host and HEADER_ONLY.match(s):
            header_host = host
            out.append(Line(i, s, "", current, t is not None, host, False))
            continue
        recovery = bool(RECOVERED.search(s))
        text_ = "" if recovery else decidable_text(s)
        if rec := GHES_RECORD.search(s):
            key = (host or header_host, rec.group("rec"))
            if sev := GHES_SEVERITY.search(s):
                ghes[key] = sev.group("sev").lower()
            if ghes.get(key) in GHES_NO_FAULT:
                text_ = ""
        out.append(Line(i, s, text_, current, t is not None, host or header_host, recovery))
    return out
