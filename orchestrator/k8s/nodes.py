"""Cordon, taint and label a Kubernetes node, post an Event naming why, and undo it all.

Every change to a node is one JSON merge patch carrying the resourceVersion it
was computed from, so the API server applies all of it or none of it, and a
concurrent change by someone else (a 409) makes us read the node again instead
of overwriting their taints. The Event is a second request: the patch records it
in an annotation first (`orchestrator.io/pending-event`), so a later call, from
this process or another one, posts it (a 409 "already exists" counts as posted)
and clears the annotation. Any failure is one line (`RemediationError`); calling
the same method again finishes the work, and calling it when the work is done
changes nothing.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import socket
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

DOMAIN = "orchestrator.io"
TAINT_KEY = f"{DOMAIN}/unhealthy"
TAINT_EFFECT = "NoSchedule"
CORDONED_LABEL = f"{DOMAIN}/cordoned"
CATEGORY_LABEL = f"{DOMAIN}/category"
REASON_ANNOTATION = f"{DOMAIN}/cordon-reason"
WAS_UNSCHEDULABLE_ANNOTATION = f"{DOMAIN}/was-unschedulable"
PENDING_EVENT_ANNOTATION = f"{DOMAIN}/pending-event"
MERGE_PATCH = "application/merge-patch+json"
COMPONENT = "orchestrator"
CONFLICT_RETRIES = 4
REQUEST_TIMEOUT_S = 10.0
MESSAGE_LIMIT = 1000
EVENT_NAMESPACE = "default"
"""The API server takes an Event about a cluster-scoped object (a Node) only in "default" (or no
namespace), as the kubelet posts its node events; the chart's Role for events lives there."""

PatchMaker = Callable[[dict[str, Any]], dict[str, Any] | None]


class RemediationError(Exception):
    """One line that says which node, which step and what the API server answered."""


@dataclass(frozen=True, slots=True)
class Outcome:
    host: str
    changed: bool
    """False when the node already was in the wanted state (a retry after success)."""
    event: str | None
    """The name of the Event posted (or found already posted), None when there was nothing to report."""


def label_value(text: str) -> str:
    """`text` as a valid label or taint value: at most 63 of [A-Za-z0-9-_.], alphanumeric at both ends."""
    v = re.sub(r"[^A-Za-z0-9_.-]+", "-", text)[:63].strip("-_.")
    return v or "unknown"


def _api_line(step: str, host: str, e: Exception) -> str:
    from urllib3.exceptions import HTTPError as TransportError  # the kubernetes client's transport

    status = getattr(e, "status", None)
    if isinstance(e, TransportError):  # no answer at all: refused, timed out, DNS
        return f"kubernetes node {host}: {step} failed: API server unreachable ({type(e).__name__}: {_first_line(e)})"
    if status is None:
        return f"kubernetes node {host}: {step} failed: {type(e).__name__}: {_first_line(e)}"
    message = ""
    try:
        message = json.loads(getattr(e, "body", "") or "{}").get("message", "")
    except (ValueError, AttributeError):
        pass
    hint = {403: " (the service account needs nodes get/patch and events create)",
            404: " (no such node: is the Ray host label the Kubernetes node name?)"}.get(status, "")
    return (f"kubernetes node {host}: {step} failed: HTTP {status} {getattr(e, 'reason', '') or ''}"
            f"{': ' + message if message else ''}{hint}").rstrip()


def _first_line(e: Exception) -> str:
    return (str(e).strip().splitlines() or [""])[0][:200]


def cordon_patch(node: dict[str, Any], *, category: str, reason: str, event: dict[str, Any]) -> dict[str, Any] | None:
    """The merge patch that cordons, taints and labels `node`; None when it already is (for this category)."""
    meta, spec = node.get("metadata") or {}, node.get("spec") or {}
    labels, notes = meta.get("labels") or {}, meta.get("annotations") or {}
    taints = spec.get("taints") or []
    value = label_value(category)
    ours = [t for t in taints if t.get("key") == TAINT_KEY]
    if (labels.get(CORDONED_LABEL) == "true" and labels.get(CATEGORY_LABEL) == value and spec.get("unschedulable")
            and [(t.get("value"), t.get("effect")) for t in ours] == [(value, TAINT_EFFECT)]):
        return None
    was = notes.get(WAS_UNSCHEDULABLE_ANNOTATION) or ("true" if spec.get("unschedulable") else "false")
    new_taints = [t for t in taints if t.get("key") != TAINT_KEY]
    new_taints.append({"key": TAINT_KEY, "value": value, "effect": TAINT_EFFECT,
                       "timeAdded": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")})
    return {
        "metadata": {
            "labels": {CORDONED_LABEL: "true", CATEGORY_LABEL: value},
            "annotations": {REASON_ANNOTATION: reason[:MESSAGE_LIMIT], WAS_UNSCHEDULABLE_ANNOTATION: was,
                            PENDING_EVENT_ANNOTATION: json.dumps(event, sort_keys=True)},
        },
        "spec": {"unschedulable": True, "taints": new_taints},
    }


def uncordon_patch(node: dict[str, Any], *, event: dict[str, Any]) -> dict[str, Any] | None:
    """The merge patch that undoes `cordon_patch`; None when the node carries nothing of ours."""
    meta, spec = node.get("metadata") or {}, node.get("spec") or {}
    labels, notes = meta.get("labels") or {}, meta.get("annotations") or {}
    taints = spec.get("taints") or []
    if CORDONED_LABEL not in labels and not any(t.get("key") == TAINT_KEY for t in taints):
        return None
    keep_unschedulable = notes.get(WAS_UNSCHEDULABLE_ANNOTATION) == "true"
    return {
        "metadata": {
            "labels": {CORDONED_LABEL: None, CATEGORY_LABEL: None},
            "annotations": {REASON_ANNOTATION: None, WAS_UNSCHEDULABLE_ANNOTATION: None,
                            PENDING_EVENT_ANNOTATION: json.dumps(event, sort_keys=True)},
        },
        # Someone else had cordoned the node before us: it stays cordoned.
        "spec": {"unschedulable": True if keep_unschedulable else None,
                 "taints": [t for t in taints if t.get("key") != TAINT_KEY] or None},
    }


def event_spec(host: str, action: str, reason: str, message: str, node_rv: str) -> dict[str, Any]:
    """What the Event will say; its name is fixed by the node's state it was decided from, so a retry reuses it."""
    digest = hashlib.sha256(f"{host}\0{action}\0{node_rv}\0{message}".encode()).hexdigest()[:16]
    return {"name": f"{host[:200]}.{COMPONENT}-{action}-{digest}", "reason": reason,
            "type": "Warning" if action == "cordon" else "Normal", "message": message[:MESSAGE_LIMIT]}


class NodeRemediator:
    """Node operations over a kubernetes `CoreV1Api` (the real client; tests point it at a loopback server)."""

    def __init__(self, api: Any, *, instance: str | None = None, timeout_s: float = REQUEST_TIMEOUT_S) -> None:
        self.api = api
        self.timeout_s = timeout_s
        """Per request: a request that times out may have been applied; the next call reads the node and sees."""
        self.instance = instance or socket.gethostname()

    @classmethod
    def from_environment(cls) -> NodeRemediator:
        """In a pod: its service account; elsewhere: the kubeconfig. One line when neither works."""
        try:
            from kubernetes import client, config
        except ImportError as e:
            raise RemediationError("kubernetes remediation needs the kubernetes client: "
                                   "pip install 'orchestrator[k8s]'") from e
        try:
            config.load_incluster_config()
        except config.ConfigException:
            try:
                # KUBECONFIG read now: the client reads it once, when it is imported
                config.load_kube_config(config_file=os.environ.get("KUBECONFIG") or None)
            except Exception as e:
                raise RemediationError(f"kubernetes remediation: no in-cluster service account and no usable "
                                       f"kubeconfig ({_first_line(e)})") from e
        return cls(client.CoreV1Api())

    # ---- the two operations --------------------------------------------------------------------
    def cordon(self, host: str, *, category: str, reason: str, interruption: str = "") -> Outcome:
        """Cordon, taint (`orchestrator.io/unhealthy=<category>:NoSchedule`) and label the node; post an Event."""
        what = f"{interruption}: " if interruption else ""
        message = f"cordoned by {COMPONENT}: {what}{category}: {reason}"

        def patch(node: dict[str, Any]) -> dict[str, Any] | None:
            ev = event_spec(host, "cordon", "OrchestratorCordoned", message, node["metadata"]["resourceVersion"])
            return cordon_patch(node, category=category, reason=f"{what}{reason}", event=ev)

        return self._remediate(host, "cordon", patch)

    def uncordon(self, host: str, *, reason: str) -> Outcome:
        """Remove our taint and labels; the node is schedulable again unless it was cordoned before us."""
        message = f"uncordoned by {COMPONENT}: {reason}"

        def patch(node: dict[str, Any]) -> dict[str, Any] | None:
            ev = event_spec(host, "uncordon", "OrchestratorUncordoned", message, node["metadata"]["resourceVersion"])
            return uncordon_patch(node, event=ev)

        return self._remediate(host, "uncordon", patch)

    # ---- steps ---------------------------------------------------------------------------------
    def _remediate(self, host: str, step: str, make_patch: PatchMaker) -> Outcome:
        node = self._read(host)
        earlier = self._finish_pending(host, node)  # an earlier call's Event, if it could not be posted then
        if earlier:
            node = self._read(host)
        for _ in range(CONFLICT_RETRIES):
            patch = make_patch(node)
            if patch is None:
                return Outcome(host, False, earlier)
            patch["metadata"]["resourceVersion"] = node["metadata"]["resourceVersion"]
            try:
                node = self._serialize(self.api.patch_node(host, patch, _content_type=MERGE_PATCH,
                                                            _request_timeout=self.timeout_s))
            except Exception as e:
                if getattr(e, "status", None) != 409:
                    raise RemediationError(_api_line(step, host, e)) from e
                node = self._read(host)  # changed under us: decide again from what is there now
                continue
            return Outcome(host, True, self._finish_pending(host, node))
        raise RemediationError(f"kubernetes node {host}: {step} failed: the node kept changing while being "
                               f"patched ({CONFLICT_RETRIES} conflicts); nothing was changed, try again")

    def _finish_pending(self, host: str, node: dict[str, Any]) -> str | None:
        """Post the Event a patch recorded on the node, then clear the record."""
        raw = ((node.get("metadata") or {}).get("annotations") or {}).get(PENDING_EVENT_ANNOTATION)
        if not raw:
            return None
        ev = json.loads(raw)
        self._post_event(host, node, ev)
        try:
            self.api.patch_node(host, {"metadata": {"annotations": {PENDING_EVENT_ANNOTATION: None}}},
                                _content_type=MERGE_PATCH, _request_timeout=self.timeout_s)
        except Exception as e:
            raise RemediationError(_api_line("clearing the posted event's record", host, e)
                                   + "; the node itself is done, a retry clears it") from e
        return ev["name"]

    def _post_event(self, host: str, node: dict[str, Any], ev: dict[str, Any]) -> None:
        from kubernetes.client import CoreV1Event, V1EventSource, V1ObjectMeta, V1ObjectReference

        now = datetime.now(UTC)
        meta = node.get("metadata") or {}
        body = CoreV1Event(
            metadata=V1ObjectMeta(name=ev["name"], namespace=EVENT_NAMESPACE),
            involved_object=V1ObjectReference(api_version="v1", kind="Node", name=host, uid=meta.get("uid")),
            reason=ev["reason"], message=ev["message"], type=ev["type"], count=1,
            first_timestamp=now, last_timestamp=now, source=V1EventSource(component=COMPONENT),
            reporting_component=COMPONENT, reporting_instance=self.instance[:128])
        try:
            self.api.create_namespaced_event(EVENT_NAMESPACE, body, _request_timeout=self.timeout_s)
        except Exception as e:
            if getattr(e, "status", None) == 409:  # posted by an earlier try
                return
            raise RemediationError(_api_line(f"posting event {ev['name']}", host, e)
                                   + "; the node itself is done, a retry posts the event") from e

    def _read(self, host: str) -> dict[str, Any]:
        try:
            return self._serialize(self.api.read_node(host, _request_timeout=self.timeout_s))
        except Exception as e:
            raise RemediationError(_api_line("reading the node", host, e)) from e

    def _serialize(self, obj: Any) -> dict[str, Any]:
        return self.api.api_client.sanitize_for_serialization(obj)
