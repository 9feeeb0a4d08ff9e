"""The `orchestrator` console script."""

from __future__ import annotations

import typer

from orchestrator.cli import chaos, dashboard, db, export, incidents, jobs, report, sim, validate
from orchestrator.cli.errors import OneLineErrors

app = typer.Typer(cls=OneLineErrors, name="orchestrator", no_args_is_help=True, add_completion=False,
                  pretty_exceptions_enable=False, help="Run and keep alive 4D-parallel training jobs on Ray.")
app.command()(jobs.submit)
app.command()(validate.validate)
app.command()(jobs.status)
app.command("jobs")(jobs.jobs)
app.command()(jobs.stop)
app.add_typer(chaos.app, name="chaos")
app.add_typer(incidents.incidents_app, name="incidents")
app.add_typer(incidents.hosts_app, name="hosts")
app.command("report")(report.report)
app.add_typer(dashboard.app, name="dashboard")
app.command("export")(export.export)
app.command("sim")(sim.sim)
app.add_typer(db.app, name="db")


if __name__ == "__main__":
    app()
