"""A Kubernetes API server for tests: nodes and events in memory, on loopback, with faults on request.

The real kubernetes client talks to it over HTTP, so its serialization,
content types and error handling are exercised. It does what the real server
does for the requests node remediation makes: GET a node, PATCH it with a JSON
merge patch (RFC 7386) under a resourceVersion precondition (409 on a stale
one), POST an Event (409 when the name exists). Every stored object is checked
against the Kubernetes schema (kubernetes-validate's, strict), as the API server
would reject a malformed one. `fail(...)` makes chosen requests fail;
`before(...)` changes a node just before a request is handled, as a concurrent
writer would.
"""

from __future__ import annotations

import copy
import json
import re
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from tests.k8s_schemas import SchemaError, validate

KUBE_VERSION = "1.37.0"
NODE_PATH = re.compile(r"^/api/v1/nodes/([^/?]+)$")
EVENTS_PATH = re.compile(r"^/api/v1/namespaces/([^/?]+)/events$")


def merge_patch(target: Any, patch: Any) -> Any:
    """RFC 7386: objects merge key by key, null deletes, anything else replaces."""
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    out = dict(target) if isinstance(target, dict) else {}
    for k, v in patch.items():
        if v is None:
            out.pop(k, None)
        else:
            out[k] = merge_patch(out.get(k), v)
    return out


def status(code: int, reason: str, message: str) -> dict[str, Any]:
    return {"kind": "Status", "apiVersion": "v1", "status": "Failure", "message": message, "reason": reason,
            "code": code}


@dataclass
class Fault:
    method: str
    path: str
    code: int
    times: int = 1


@dataclass
class FakeKubeApi:
    nodes: dict[str, dict[str, Any]] = field(default_factory=dict)
    events: dict[tuple[str, str], dict[str, Any]] = field(default_factory=dict)
    requests: list[tuple[str, str, str, Any]] = field(default_factory=list)
    """(method, path, content type, body) of every request, faulted ones included."""
    faults: list[Fault] = field(default_factory=list)
    hooks: list[tuple[str, str, Callable[[FakeKubeApi], None]]] = field(default_factory=list)
    _rv: int = 100

    def add_node(self, name: str, *, unschedulable: bool = False, taints: list[dict[str, Any]] | None = None,
                 labels: dict[str, str] | None = None) -> None:
        node: dict[str, Any] = {"apiVersion": "v1", "kind": "Node", "metadata": {
            "name": name, "uid": f"uid-{name}", "resourceVersion": self._next_rv(),
            "labels": {"kubernetes.io/hostname": name, **(labels or {})}}, "spec": {}}
        if unschedulable:
            node["spec"]["unschedulable"] = True
        if taints:
            node["spec"]["taints"] = taints
        self.nodes[name] = node

    def fail(self, method: str, path: str, code: int, times: int = 1) -> None:
        """The next `times` requests of `method` to `path` (a prefix) answer `code` and change nothing."""
        self.faults.append(Fault(method, path, code, times))

    def before(self, method: str, path: str, fn: Callable[[FakeKubeApi], None]) -> None:
        """Run `fn` once, just before the next request of `method` to `path` is handled."""
        self.hooks.append((method, path, fn))

    def touch(self, name: str, change: Callable[[dict[str, Any]], None]) -> None:
        """Someone else's write to a node: the change and a new resourceVersion."""
        change(self.nodes[name])
        self.nodes[name]["metadata"]["resourceVersion"] = self._next_rv()

    def _next_rv(self) -> str:
        self._rv += 1
        return str(self._rv)

    # ---- request handling ------------------------------------------------------------------------
    def handle(self, method: str, path: str, ctype: str, body: Any) -> tuple[int, dict[str, Any]]:
        self.requests.append((method, path, ctype, body))
        for i, (hook_method, prefix, fn) in enumerate(self.hooks):
            if hook_method == method and path.startswith(prefix):
                del self.hooks[i]
                fn(self)
                break
        for f in self.faults:
            if f.method == method and path.startswith(f.path) and f.times > 0:
                f.times -= 1
                return f.code, status(f.code, {403: "Forbidden", 500: "InternalError", 503: "ServiceUnavailable"}
                                      .get(f.code, "Unknown"), f"injected {f.code}")
        if m := NODE_PATH.match(path):
            return self._node(method, m.group(1), ctype, body)
        if (m := EVENTS_PATH.match(path)) and method == "POST":
            return self._event(m.group(1), body)
        return 404, status(404, "NotFound", f"no route {method} {path}")

    def _node(self, method: str, name: str, ctype: str, body: Any) -> tuple[int, dict[str, Any]]:
        node = self.nodes.get(name)
        if node is None:
            return 404, status(404, "NotFound", f'nodes "{name}" not found')
        if method == "GET":
            return 200, node
        if method != "PATCH":
            return 405, status(405, "MethodNotAllowed", method)
        if ctype != "application/merge-patch+json":
            return 415, status(415, "UnsupportedMediaType", f"this fake takes merge patches, not {ctype}")
        want_rv = (body.get("metadata") or {}).get("resourceVersion")
        if want_rv is not None and want_rv != node["metadata"]["resourceVersion"]:
            return 409, status(409, "Conflict", f'Operation cannot be fulfilled on nodes "{name}": '
                               "the object has been modified; please apply your changes to the latest version")
        new = merge_patch(node, body)
        new["metadata"]["resourceVersion"] = self._next_rv()
        if err := self._invalid(new):
            return 422, status(422, "Invalid", err)
        self.nodes[name] = new
        return 200, new

    def _event(self, namespace: str, body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        meta = body.get("metadata") or {}
        name = meta.get("name", "")
        if meta.get("namespace", namespace) != namespace:
            return 400, status(400, "BadRequest", "the namespace of the provided object does not match the "
                               "namespace sent on the request")
        # The API server's legacy event validation: an event about a cluster-scoped object (no
        # involvedObject.namespace) is taken only in "default" or no namespace.
        involved_ns = (body.get("involvedObject") or {}).get("namespace") or ""
        if not body.get("eventTime") and involved_ns != namespace and (involved_ns or namespace != "default"):
            return 422, status(422, "Invalid", f'involvedObject.namespace: Invalid value: "{involved_ns}": '
                               "does not match event.namespace")
        if (namespace, name) in self.events:
            return 409, status(409, "AlreadyExists", f'events "{name}" already exists')
        ev = {"apiVersion": "v1", "kind": "Event", **body}
        if err := self._invalid(ev):
            return 422, status(422, "Invalid", err)
        self.events[(namespace, name)] = ev
        return 201, ev

    @staticmethod
    def _invalid(obj: dict[str, Any]) -> str | None:
        try:
            validate(obj, KUBE_VERSION)
        except SchemaError as e:
            return str(e)
        return None


class FakeKubeServer:
    """`FakeKubeApi` served on 127.0.0.1 in a thread; use as a context manager."""

    def __init__(self, api: FakeKubeApi | None = None) -> None:
        self.api = api or FakeKubeApi()
        lock = threading.Lock()
        state = self.api

        class Handler(BaseHTTPRequestHandler):
            def _serve(self) -> None:
                n = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(n) if n else b""
                body = json.loads(raw) if raw else None
                path = self.path.split("?", 1)[0]
                with lock:
                    code, out = state.handle(self.command, path, self.headers.get("Content-Type", ""), body)
                data = json.dumps(out).encode()
                self.send_response(code)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            do_GET = do_PATCH = do_POST = _serve

            def log_message(self, *args: Any) -> None:
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self._thread = threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.02},
                                        daemon=True)

    def __enter__(self) -> FakeKubeServer:
        self._thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
