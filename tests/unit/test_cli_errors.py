"""Every command and subcommand, fed bad input: one line, the right exit code, no traceback.

Run in-process (CliRunner) over a catalog filled with realistic rows; nothing here
may start or import Ray, and bad input must not create the state folder.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from orchestrator.cli.main import app
from tests.cli_catalog import fill
from tests.conftest import small_job, write_job

DOWN_DB = "postgresql://user:secret@127.0.0.1:1/none"
RUNNING = "llama3-8b-pretrain-ablation-07"
DONE = "tiny"


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("cli-errors")
    state = root / "state"
    fill(f"sqlite:///{state / 'catalog.db'}", state / "runs")
    bad_key = small_job()
    bad_key["checkpoint"]["interval"] = 3
    corrupt = root / "corrupt"
    corrupt.mkdir()
    (corrupt / "catalog.db").write_bytes(b"this is not a database" * 100)
    (root / "a-file").write_text("x")
    too_big = small_job(dp=8, resources={"nodes": 2, "ranks_per_node": 2})
    return {"root": root, "state": state, "ok": write_job(root / "ok.yaml", small_job()),
            "too_big": write_job(root / "big.yaml", too_big),
            "bad_key": write_job(root / "bad.yaml", bad_key), "corrupt": corrupt, "file": root / "a-file"}


# (name, args, exit code, a word the line must contain). {root}, {ok}, ... are filled from `world`.
CASES: list[tuple[str, list[str], int, str]] = [
    ("no such command", ["frobnicate"], 2, "frobnicate"),
    ("unknown option", ["jobs", "--bogus"], 2, "--bogus"),
    # submit / validate
    ("submit missing file", ["submit", "{root}/absent.yaml"], 2, "absent.yaml"),
    ("submit unknown key", ["submit", "{bad_key}"], 2, "checkpoint.interval"),
    ("submit state dir under a file", ["submit", "{ok}", "--state-dir", "{file}/state"], 2, "--state-dir"),
    ("submit state dir not creatable", ["submit", "{ok}", "--state-dir", "/proc/no-such/state"], 2, "--state-dir"),
    ("submit bad db url", ["submit", "{ok}", "--state-dir", "{root}/s2", "--db", "notaurl"], 2, "notaurl"),
    ("submit no-follow without cluster", ["submit", "{ok}", "--no-follow"], 2, "--no-follow"),
    ("validate missing file", ["validate", "{root}/absent.yaml"], 2, "absent.yaml"),
    ("validate a folder", ["validate", "{root}"], 2, "no such job file"),
    ("validate unknown key", ["validate", "{bad_key}"], 2, "unknown key"),
    ("validate layout does not fit", ["validate", "{too_big}"], 2, "do not fit"),
    # status / jobs / stop
    ("status unknown job", ["status", "nope"], 2, "nope"),
    ("status missing state dir", ["status", "--state-dir", "{root}/absent"], 2, "no catalog"),
    ("status bad db url", ["status", "--db", "notaurl"], 2, "notaurl"),
    ("status db down", ["status", DONE, "--db", DOWN_DB], 1, "cannot reach database"),
    ("status json and wide", ["status", DONE, "--json", "--wide"], 2, "--wide"),
    ("jobs corrupt catalog", ["jobs", "--state-dir", "{corrupt}"], 1, "database"),
    ("jobs db down", ["jobs", "--db", DOWN_DB], 1, "cannot reach database"),
    ("jobs unknown driver", ["jobs", "--db", "nosuchdb://x/y"], 2, "nosuchdb"),
    ("jobs json and wide", ["jobs", "--json", "--wide"], 2, "--wide"),
    ("stop unknown job", ["stop", "nope"], 2, "nope"),
    ("stop finished job", ["stop", DONE], 2, "not running"),
    # chaos
    ("chaos kill finished job", ["chaos", "kill", DONE, "--rank", "0"], 2, "not running"),
    ("chaos hang unknown job", ["chaos", "hang", "nope", "--rank", "0"], 2, "nope"),
    ("chaos kill rank out of range", ["chaos", "kill", RUNNING, "--rank", "999"], 2, "out of range"),
    ("chaos kill no rank", ["chaos", "kill", RUNNING], 2, "--rank"),
    ("chaos kill rank not a number", ["chaos", "kill", RUNNING, "--rank", "two"], 2, "--rank"),
    ("chaos slow negative delay", ["chaos", "slow", RUNNING, "--rank", "0", "--delay-s", "-1"], 2, "--delay-s"),
    ("chaos slow nan delay", ["chaos", "slow", RUNNING, "--rank", "0", "--delay-s", "nan"], 2, "--delay-s"),
    ("chaos slow delay not a number", ["chaos", "slow", RUNNING, "--rank", "0", "--delay-s", "5m"], 2, "--delay-s"),
    ("chaos xid code out of range", ["chaos", "xid", RUNNING, "--rank", "0", "--code", "0"], 2, "--code"),
    ("chaos xid unknown job", ["chaos", "xid", "nope", "--rank", "0", "--code", "79"], 2, "nope"),
    ("chaos sdc with the check off", ["chaos", "sdc", RUNNING, "--rank", "0"], 2, "sdc_check_interval_steps"),
    ("chaos sdc unknown job", ["chaos", "sdc", "nope", "--rank", "0"], 2, "nope"),
    ("chaos nan finished job", ["chaos", "nan", DONE], 2, "not running"),
    ("chaos missing state dir", ["chaos", "kill", RUNNING, "-r", "0", "--state-dir", "{root}/absent"], 2,
     "no catalog"),
    # export
    ("export unknown job", ["export", "nope", "--format", "hf", "--output", "{root}/out"], 2, "nope"),
    # sim
    ("sim missing scenario", ["sim", "{root}/absent.yaml"], 2, "absent.yaml"),
    ("sim not a scenario", ["sim", "{bad_key}"], 2, "cluster"),
    ("chaos stall unknown point", ["chaos", "stall", RUNNING, "--rank", "0", "--where", "lunch"], 2, "--where"),
    # dashboard
    ("dashboard export into a file's folder", ["dashboard", "export", "--output", "{file}/d.json"], 2, "--output"),
    ("dashboard push bad url", ["dashboard", "push", "--url", "grafana:3000", "--token-env", "PATH"], 2, "--url"),
    ("dashboard push no token", ["dashboard", "push", "--url", "http://127.0.0.1:1",
                                 "--token-env", "NO_SUCH_TOKEN_VARIABLE"], 2, "token"),
    # db
    ("db upgrade bad db url", ["db", "upgrade", "--db", "notaurl"], 2, "notaurl"),
    # incidents
    ("incidents list unknown job", ["incidents", "list", "--job", "nope"], 2, "nope"),
    ("incidents list bad duration", ["incidents", "list", "--since", "5x"], 2, "--since"),
    ("incidents list huge duration", ["incidents", "list", "--since", "99999999999999d"], 2, "--since"),
    ("incidents list bad date", ["incidents", "list", "--since", "2026-13-01"], 2, "--since"),
    ("incidents list unknown category", ["incidents", "list", "--category", "gremlins"], 2, "gremlins"),
    ("incidents list bad db url", ["incidents", "list", "--db", "notaurl"], 2, "notaurl"),
    ("incidents list db down", ["incidents", "list", "--db", DOWN_DB], 1, "cannot reach database"),
    ("incidents list json and wide", ["incidents", "list", "--json", "--wide"], 2, "--wide"),
    ("incidents show not a number", ["incidents", "show", "abc"], 2, "integer"),
    ("incidents show zero", ["incidents", "show", "0"], 2, "greater than or equal to 1"),
    ("incidents show too big", ["incidents", "show", "99999999999999999999"], 2, "less than"),
    ("incidents show unknown", ["incidents", "show", "4242"], 2, "4242"),
    ("incidents ack unknown", ["incidents", "ack", "4242", "--by", "alice"], 2, "4242"),
    ("incidents resolve not a number", ["incidents", "resolve", "1.5"], 2, "incident"),
    ("incidents reclassify unknown category", ["incidents", "reclassify", "1", "gremlins"], 2, "gremlins"),
    ("incidents reclassify unknown id", ["incidents", "reclassify", "4242", "faulty_gpu"], 2, "4242"),
    ("incidents classify missing file", ["incidents", "classify", "{root}/absent.log"], 2, "absent.log"),
    ("incidents classify a folder", ["incidents", "classify", "{root}"], 2, "cannot read"),
    ("incidents classify json and wide", ["incidents", "classify", "{ok}", "--json", "--wide"], 2, "--wide"),
    # hosts
    ("hosts list missing state dir", ["hosts", "list", "--state-dir", "{root}/absent"], 2, "no catalog"),
    ("hosts list db down", ["hosts", "list", "--db", DOWN_DB], 1, "cannot reach database"),
    ("hosts cordon unknown host", ["hosts", "cordon", "ghost.example.internal"], 2, "ghost.example.internal"),
    ("hosts uncordon unknown host", ["hosts", "uncordon", "ghost"], 2, "ghost"),
    ("hosts cordon name like markup", ["hosts", "cordon", "[/bold]ghost"], 2, "'[/bold]ghost'"),
    # report
    ("report unknown job", ["report", "nope"], 2, "nope"),
    ("report html into a missing folder", ["report", DONE, "--html", "{root}/absent/r.html"], 2, "--html"),
    ("report html onto a folder", ["report", DONE, "--html", "{root}"], 2, "--html"),
    ("report html under a file", ["report", DONE, "--html", "{file}/r.html"], 2, "--html"),
    ("report bad db url", ["report", "--db", "notaurl"], 2, "notaurl"),
    ("report json and wide", ["report", "--json", "--wide"], 2, "--wide"),
]


def _run(args: list[str], state: Path, env: dict[str, str] | None = None) -> tuple[int, list[str], list[str]]:
    r = CliRunner().invoke(app, args, env={"ORCHESTRATOR_HOME": str(state), "COLUMNS": "80", "RAY_ADDRESS": "",
                                           "ORCHESTRATOR_DB": "", **(env or {})})
    return r.exit_code, r.stdout.splitlines(), r.stderr.splitlines()


def test_every_command_refuses_bad_input_in_one_line(world: dict[str, Path]) -> None:
    ray_before = "ray" in sys.modules
    problems = []
    names = {k: str(v) for k, v in world.items()}
    for name, raw, code, word in CASES:
        args = [a.format(**names) for a in raw]
        got, out, err = _run(args, world["state"])
        lines = [ln for ln in out + err if ln.strip()]
        text = "\n".join(lines)
        if got != code or len(lines) != 1 or out or word not in text or "Traceback" in text:
            problems.append(f"{name}: exit {got} (want {code}), {len(lines)} line(s), want {word!r}:\n{text}")
    assert not problems, "\n\n".join(problems)
    assert ray_before or "ray" not in sys.modules, "a bad input imported Ray"
    assert not (world["root"] / "s2").exists(), "a refused submit created its state folder"


def test_the_table_covers_every_command() -> None:
    import typer

    def paths(cmd, prefix: tuple[str, ...] = ()) -> set[tuple[str, ...]]:  # type: ignore[no-untyped-def]
        subs = getattr(cmd, "commands", None)
        if not subs:
            return {prefix}
        return set().union(*(paths(c, (*prefix, name)) for name, c in subs.items()))

    commands = paths(typer.main.get_command(app))
    assert len(commands) >= 18
    covered = {p for p in commands for _, args, _, _ in CASES if tuple(args[: len(p)]) == p}
    assert covered == commands, f"no bad-input case for {sorted(commands - covered)}"


def test_internal_error_is_one_line_and_a_log(world: dict[str, Path], monkeypatch: pytest.MonkeyPatch) -> None:
    from orchestrator.catalog.repository import Catalog

    def broken(self: Catalog) -> None:
        raise KeyError("a bug somewhere deep")

    monkeypatch.setattr(Catalog, "list_jobs", broken)
    state = world["state"]
    got, out, err = _run(["jobs"], state)
    assert got == 1 and not out and len(err) == 1, err
    assert "Traceback" not in err[0] and "KeyError" in err[0]
    logs = list((state / "logs").glob("cli-error-*.log"))
    assert len(logs) == 1 and str(logs[0]) in err[0]
    text = logs[0].read_text()
    assert "Traceback" in text and "a bug somewhere deep" in text and "list_jobs" in text


def test_validate_accepts_a_good_file_and_writes_nothing(world: dict[str, Path], tmp_path: Path) -> None:
    state = tmp_path / "never"
    got, out, err = _run(["validate", str(world["ok"])], state)
    assert got == 0 and not err and len(out) == 1
    assert "tiny" in out[0] and "2 ranks" in out[0] and "dp 2" in out[0]
    assert not state.exists()


@pytest.mark.skipif(os.geteuid() == 0, reason="root can write anywhere")
def test_submit_into_a_read_only_folder(world: dict[str, Path], tmp_path: Path) -> None:
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o500)
    try:
        got, out, err = _run(["submit", str(world["ok"]), "--state-dir", str(ro / "state")], world["state"])
    finally:
        ro.chmod(0o700)
    assert got == 2 and len(err) == 1 and "--state-dir" in err[0], err


def test_end_of_a_job_without_a_loss(capsys: pytest.CaptureFixture[str]) -> None:
    """A job that ends without ever reporting a loss (resumed past its last step) still gets its line."""
    from orchestrator.catalog.models import Job
    from orchestrator.cli.jobs import _report_end

    job = Job(name="resumed", state="succeeded", last_step=12, steps_total=12, current_attempt=1, last_loss=None)
    assert _report_end(job, json_out=False) == 0
    assert "job resumed succeeded: step 12/12, 1 attempt(s), final loss -" in capsys.readouterr().out


def test_text_that_looks_like_markup_is_printed_as_is(world: dict[str, Path]) -> None:
    got, out, err = _run(["incidents", "ack", "1", "--by", "[/bold]alice", "--note", "[red]ok"], world["state"])
    assert (got, out, err) == (0, ["incident 1 acknowledged by [/bold]alice"], [])


def test_crash_log_hides_database_passwords(tmp_path: Path) -> None:
    from orchestrator.cli.errors import write_crash_log

    try:
        raise RuntimeError("boom")
    except RuntimeError:
        log = write_crash_log(["jobs", "--db", "postgresql://alice:hunter2@db.example/catalog",
                               "--state-dir", str(tmp_path)])
    assert log.parent == tmp_path / "logs"
    text = log.read_text()
    assert "hunter2" not in text and "alice:***@db.example" in text and "RuntimeError: boom" in text
