"""Every failure of a command as one line and an exit code, never a traceback.

2: the input is wrong (usage, a bad value, an unknown job, host or incident);
1: the world failed (a database down, a cluster out of reach) or the program did,
in which case the full traceback goes to a log file under the state folder and
the line says where.
"""

from __future__ import annotations

import os
import sys
import tempfile
import traceback
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import typer
from typer._click import exceptions as click  # typer carries its own click; these are the ones it raises
from typer.core import TyperGroup

from orchestrator.catalog.db import CatalogError, CatalogURLError, redact
from orchestrator.catalog.repository import NotFoundError
from orchestrator.cli.common import EXIT_FAILED, EXIT_USAGE, say_error
from orchestrator.paths import state_dir
from orchestrator.spec import JobFileError


def _usage(e: click.UsageError) -> str:
    msg = " ".join(e.format_message().split())
    ctx = e.ctx
    if ctx is not None:
        msg += f" (see '{ctx.command_path} --help')"
    return msg


def _state_dir_in(args: Sequence[str]) -> str | None:
    for i, a in enumerate(args):
        if a == "--state-dir" and i + 1 < len(args):
            return args[i + 1]
        if a.startswith("--state-dir="):
            return a.split("=", 1)[1]
    return None


def write_crash_log(args: Sequence[str]) -> Path:
    """The current exception's traceback in `<state>/logs/`, else in the temp folder."""
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    shown = [redact(a) if "://" in a else a for a in args]  # no database password in the log
    text = f"orchestrator {' '.join(shown)}\n\n{traceback.format_exc()}"
    name = f"cli-error-{stamp}-{os.getpid()}.log"
    for folder in (state_dir(_state_dir_in(args)) / "logs", Path(tempfile.gettempdir())):
        try:
            folder.mkdir(parents=True, exist_ok=True)
            path = folder / name
            path.write_text(text)
            return path
        except OSError:
            continue
    raise OSError("no folder to write the traceback to")


class OneLineErrors(TyperGroup):
    """The root command: runs a subcommand and turns anything it raises into one line and an exit code."""

    def main(self, args: Sequence[str] | None = None, prog_name: str | None = None,  # type: ignore[override]
             complete_var: str | None = None, standalone_mode: bool = True, **extra: Any) -> Any:
        argv = list(sys.argv[1:] if args is None else args)
        code = self._run(argv, prog_name, complete_var, **extra)
        if not standalone_mode:
            return code
        sys.exit(code)

    def _run(self, argv: list[str], prog_name: str | None, complete_var: str | None, **extra: Any) -> int:
        try:
            rv = super().main(argv, prog_name or "orchestrator", complete_var, standalone_mode=False, **extra)
            return rv if isinstance(rv, int) else 0
        except click.NoArgsIsHelpError as e:
            typer.echo(e.format_message())
            return EXIT_USAGE
        except click.UsageError as e:
            say_error(_usage(e))
            return EXIT_USAGE
        except click.ClickException as e:
            say_error(" ".join(e.format_message().split()))
            return e.exit_code
        except typer.Abort:
            say_error("aborted")
            return 130
        except (JobFileError, NotFoundError, CatalogURLError) as e:
            say_error(str(e).strip('"'))
            return EXIT_USAGE
        except CatalogError as e:
            say_error(str(e))
            return EXIT_FAILED
        except BrokenPipeError:
            return EXIT_FAILED
        except Exception as e:
            return _internal(e, argv)


def _internal(e: Exception, argv: list[str]) -> int:
    where = write_crash_log(argv)
    first = (str(e).strip().splitlines() or [""])[0]
    say_error(f"internal error: {type(e).__name__}{': ' + first if first else ''} (traceback in {where})")
    return EXIT_FAILED
