"""`db upgrade`: bring the catalog's schema to this version's revision.

Read-only commands never change the schema; they point here when it is behind.
"""

from __future__ import annotations

import typer

from orchestrator.catalog.db import head_revision, redact
from orchestrator.cli.common import DbOpt, StateDirOpt, console, open_catalog

app = typer.Typer(no_args_is_help=True, help="The catalog database itself.")


@app.command()
def upgrade(db: DbOpt = None, state_dir_opt: StateDirOpt = None) -> None:
    """Migrate the catalog to this version's schema (creates it if there is none); safe to run concurrently."""
    catalog = open_catalog(state_dir_opt, db, migrate=True)
    where = redact(catalog.url)
    catalog.close()
    if catalog.upgraded:
        console.print(f"upgraded the catalog at {where} to revision {head_revision()}", markup=False)
    else:
        console.print(f"the catalog at {where} is already at revision {head_revision()}", markup=False)
