"""`orchestrator dashboard export|push`: the reliability dashboard as JSON, or uploaded to a Grafana."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Annotated

import typer

from orchestrator.cli.common import EXIT_USAGE, console, fail

TOKEN_ENV = "GRAFANA_TOKEN"
EXIT_REFUSED = 1

app = typer.Typer(no_args_is_help=True, help="The Grafana reliability dashboard.")


@app.command()
def export(output: Annotated[Path | None, typer.Option("--output", "-o", help="Write here (default: stdout)")] = None,
           ) -> None:
    """Print (or write) the dashboard JSON, as committed in dashboards/reliability.json."""
    from orchestrator.dashboards.reliability import render

    text = render()
    if output is None:
        typer.echo(text, nl=False)
        return
    try:
        tmp = output.with_name(output.name + ".tmp")
        tmp.write_text(text)
        tmp.replace(output)
    except OSError as e:
        fail(f"--output {output}: {e.strerror or e}", EXIT_USAGE)
    console.print(f"wrote {output}")


@app.command()
def push(
    url: Annotated[str, typer.Option("--url", help="Grafana base URL, e.g. http://grafana:3000")],
    token_env: Annotated[str, typer.Option("--token-env", help="Environment variable holding the API token")]
    = TOKEN_ENV,
    folder_uid: Annotated[str | None, typer.Option("--folder-uid", help="Grafana folder to put it in")] = None,
    timeout_s: Annotated[float, typer.Option("--timeout", help="Seconds to wait for Grafana")] = 10.0,
) -> None:
    """Upload the dashboard (POST /api/dashboards/db, overwriting the one with the same uid)."""
    from grafana_client import GrafanaApi
    from grafana_client.client import GrafanaClientError, GrafanaException

    from orchestrator.dashboards.reliability import build

    token = os.environ.get(token_env)
    if not token:
        fail(f"no Grafana token: set {token_env} (a service account token)", EXIT_USAGE)
    if not url.startswith(("http://", "https://")):
        fail(f"--url {url!r}: must start with http:// or https://", EXIT_USAGE)
    body: dict[str, object] = {"dashboard": build(), "overwrite": True, "message": "orchestrator dashboard push"}
    if folder_uid:
        body["folderUid"] = folder_uid
    api = GrafanaApi.from_url(url, credential=token, timeout=timeout_s)
    try:
        res = api.dashboard.update_dashboard(body)
    except GrafanaClientError as e:
        fail(f"Grafana at {url} refused the dashboard: HTTP {e.status_code}: {_message(e)}", EXIT_REFUSED)
    except GrafanaException as e:
        fail(f"Grafana at {url} failed: {_message(e)}", EXIT_REFUSED)
    except Exception as e:  # connection refused, DNS, TLS: whatever the HTTP stack raises
        fail(f"cannot reach Grafana at {url}: {type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}",
             EXIT_REFUSED)
    where = res.get("url", "") if isinstance(res, dict) else ""
    console.print(f"pushed dashboard {res.get('uid', '') if isinstance(res, dict) else ''} to {url}{where}")


def _message(e: Exception) -> str:
    resp = getattr(e, "response", None)
    if isinstance(resp, dict) and resp.get("message"):
        return str(resp["message"])
    msg = getattr(e, "message", None) or str(e)
    return json.dumps(msg) if not isinstance(msg, str) else msg.splitlines()[0]
