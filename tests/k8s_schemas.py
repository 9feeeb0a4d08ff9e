"""Offline Kubernetes schema checks: built-in kinds from kubernetes-validate, custom ones from vendored CRDs.

Both are strict, as `kubectl apply --validate=strict` is: a field the schema
does not know is an error (the API server would drop it silently, so a typo in
a template would never take effect). Validators are built once per kind; a
kubernetes-validate call rebuilds its registry every time (~0.1 s).
"""

from __future__ import annotations

import functools
import json
import re
from pathlib import Path
from typing import Any

import jsonschema
from kubernetes_validate.utils import schema_contents
from referencing import Registry, Resource

CRD_DIR = Path(__file__).resolve().parent / "fixtures" / "crds"
KUBE_VERSIONS = ("1.30.0", "1.37.0")
"""The oldest Kubernetes the chart supports (Chart.yaml kubeVersion) and the newest schema bundled."""


class SchemaError(Exception):
    pass


def _folder(version: str) -> str:
    return f"kubernetes-json-schema/v{version}-local-strict"


@functools.cache
def _definitions(version: str) -> Registry:
    """Every kind's schema refers into one 1.8 MB file: read it once per version."""
    return Resource.from_contents(schema_contents(f"{_folder(version)}/_definitions.json", version)) @ Registry()


@functools.cache
def _builtin(kind: str, api_version: str, version: str) -> jsonschema.Validator | None:
    group = re.sub(r"^([^./]*)(?:\.[^/]*)?/", r"\1-", api_version)
    try:
        schema = schema_contents(f"{_folder(version)}/{kind.lower()}-{group}.json", version)
    except FileNotFoundError:
        return None
    return jsonschema.Draft202012Validator(schema, registry=Resource.from_contents(schema) @ _definitions(version))


def strict(schema: Any) -> Any:
    """An OpenAPI v3 CRD schema as JSON Schema that rejects unknown fields where the API server would prune them."""
    if isinstance(schema, list):
        return [strict(s) for s in schema]
    if not isinstance(schema, dict):
        return schema
    out = {k: (strict(v) if k != "properties" else {p: strict(s) for p, s in v.items()}) for k, v in schema.items()}
    if ("properties" in out and "additionalProperties" not in out
            and not out.get("x-kubernetes-preserve-unknown-fields")):
        out["additionalProperties"] = False
    if out.pop("nullable", False) and "type" in out:
        out["type"] = [out["type"], "null"]
    return out


@functools.cache
def _crd_schemas() -> dict[tuple[str, str], dict[str, Any]]:
    out = {}
    for f in sorted(CRD_DIR.glob("*.json")):
        d = json.loads(f.read_text())
        out[(d["kind"], f"{d['group']}/{d['version']}")] = d["openAPIV3Schema"]
    return out


@functools.cache
def _custom(kind: str, api_version: str) -> jsonschema.Validator | None:
    schema = _crd_schemas().get((kind, api_version))
    return None if schema is None else jsonschema.Draft202012Validator(strict(schema))


def validate(obj: dict[str, Any], version: str) -> None:
    """Raise SchemaError naming the object and the first bad field; unknown kinds are errors too."""
    kind, api = obj.get("kind", ""), obj.get("apiVersion", "")
    v = _custom(kind, api) or _builtin(kind, api, version)
    if v is None:
        raise SchemaError(f"{kind} {api}: no schema (neither built in for {version} nor vendored in {CRD_DIR})")
    err = jsonschema.exceptions.best_match(v.iter_errors(obj))
    if err is not None:
        where = "/".join(map(str, err.absolute_path)) or "(top)"
        name = (obj.get("metadata") or {}).get("name")
        raise SchemaError(f"{kind} {name} (Kubernetes {version}): {where}: {err.message[:300]}")
