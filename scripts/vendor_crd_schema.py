"""Vendor the openAPIV3Schema of a CustomResourceDefinition as test data (tests/fixtures/crds/).

The chart's tests validate the RayCluster, ServiceMonitor and PrometheusRule it
renders against the schemas their operators install, offline. Field
descriptions are dropped (they are most of the bytes); nothing else changes.

    python scripts/vendor_crd_schema.py CRD.yaml --version v1 --source ray-project/kuberay@COMMIT:PATH \
        --copyright "The KubeRay Authors" --out tests/fixtures/crds/rayclusters.ray.io_v1.json
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import yaml


def strip_descriptions(node: Any) -> Any:
    if isinstance(node, dict):
        # `description` is a keyword only where it sits beside a schema keyword; a property named
        # "description" (under `properties`) is kept.
        return {k: strip_descriptions(v) for k, v in node.items()
                if not (k == "description" and isinstance(v, str))}
    if isinstance(node, list):
        return [strip_descriptions(v) for v in node]
    return node


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("crd", type=Path)
    p.add_argument("--version", required=True, help="the CRD version to keep, e.g. v1")
    p.add_argument("--source", required=True, help="repository@commit:path the CRD came from")
    p.add_argument("--copyright", required=True, help="the copyright holder named in the source's license")
    p.add_argument("--out", type=Path, required=True)
    a = p.parse_args(argv)
    crd = next(d for d in yaml.safe_load_all(a.crd.read_text()) if d and d.get("kind") == "CustomResourceDefinition")
    spec = crd["spec"]
    try:
        ver = next(v for v in spec["versions"] if v["name"] == a.version)
    except StopIteration:
        print(f"{a.crd}: no version {a.version} in {crd['metadata']['name']}", file=sys.stderr)
        return 2
    doc = {"group": spec["group"], "version": a.version, "kind": spec["names"]["kind"],
           "openAPIV3Schema": strip_descriptions(ver["schema"]["openAPIV3Schema"])}
    header = [f"openAPIV3Schema of {doc['kind']} {doc['group']}/{a.version}, vendored as test data from",
              a.source,
              f"Copyright {a.copyright}. Licensed under the Apache License, Version 2.0",
              "(http://www.apache.org/licenses/LICENSE-2.0); distributed on an \"AS IS\" BASIS,",
              "WITHOUT WARRANTIES OR CONDITIONS OF ANY KIND.",
              "Changed: field descriptions removed. Regenerate with scripts/vendor_crd_schema.py."]
    a.out.parent.mkdir(parents=True, exist_ok=True)
    # JSON, not YAML: the RayCluster schema parses in milliseconds instead of most of a second.
    a.out.write_text(json.dumps({"license_header": header, **doc}, indent=1) + "\n")
    print(f"{a.out}: {a.out.stat().st_size} bytes")
    return 0


if __name__ == "__main__":
    sys.exit(main())
