"""The Helm chart, rendered and linted by Helm's own engine (helm-python-sdk binds Helm's Go SDK), and every
manifest checked against the Kubernetes schemas (kubernetes-validate) and the vendored KubeRay and
Prometheus Operator CRD schemas, offline, for the default values and the GPU example values.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import helm_python as helm
import pytest
import yaml

from orchestrator.spec import load_job_file
from tests.k8s_schemas import KUBE_VERSIONS, SchemaError, validate

REPO = Path(__file__).resolve().parents[2]
CHART = REPO / "helm" / "orchestrator"
GPU_VALUES = yaml.safe_load((REPO / "helm" / "examples" / "gpu-cluster.yaml").read_text())
VALUES = {"default": {}, "gpu": GPU_VALUES}
NAMESPACE = "training"
TAINT_KEY = "orchestrator.io/unhealthy"


def render(values: dict[str, Any]) -> list[dict[str, Any]]:
    with helm.Chart.load(CHART) as chart:
        out = chart.render(values, name="train", namespace=NAMESPACE, is_install=True)
    docs = []
    for path, text in sorted(out.items()):
        if path.endswith(".yaml"):
            docs += [d for d in yaml.safe_load_all(text) if d]
    return docs


@pytest.fixture(scope="module")
def rendered() -> dict[str, list[dict[str, Any]]]:
    return {case: render(values) for case, values in VALUES.items()}


def one(docs: list[dict[str, Any]], kind: str, component: str | None = None) -> dict[str, Any]:
    found = [d for d in docs if d["kind"] == kind and (component is None or d["metadata"]["labels"].get(
        "app.kubernetes.io/component") == component)]
    assert len(found) == 1, f"{kind} {component}: {len(found)} rendered"
    return found[0]


def pod_specs(docs: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    rc = one(docs, "RayCluster")["spec"]
    out = {"head": rc["headGroupSpec"]["template"]["spec"]}
    out |= {f"worker-{g['groupName']}": g["template"]["spec"] for g in rc["workerGroupSpecs"]}
    out |= {d["kind"]: d["spec"]["template"]["spec"] for d in docs if d["kind"] in ("Job", "DaemonSet")}
    return out


def env_of(container: dict[str, Any]) -> dict[str, Any]:
    return {e["name"]: e.get("value", e.get("valueFrom")) for e in container.get("env", [])}


@pytest.mark.parametrize("case", list(VALUES))
def test_chart_lints_clean(case: str) -> None:
    report = helm.lint(CHART, VALUES[case], strict=True, namespace=NAMESPACE)
    assert report["errors"] == []
    assert [m for m in report["messages"] if m["severity"] >= 2] == []


@pytest.mark.parametrize("case", list(VALUES))
def test_every_manifest_matches_its_schema(rendered: dict[str, list[dict[str, Any]]], case: str) -> None:
    docs = rendered[case]
    kinds = {d["kind"] for d in docs}
    assert {"RayCluster", "Job", "DaemonSet", "ConfigMap", "Service", "PersistentVolumeClaim", "ServiceAccount",
            "ClusterRole", "ClusterRoleBinding", "Role", "RoleBinding"} <= kinds
    if case == "gpu":
        assert {"ServiceMonitor", "PrometheusRule"} <= kinds
    for version in KUBE_VERSIONS:
        for d in docs:
            validate(d, version)


def test_the_schemas_catch_a_misspelt_field(rendered: dict[str, list[dict[str, Any]]]) -> None:
    """The check can fail: a field KubeRay or Kubernetes does not know is an error, as with --validate=strict."""
    rc = json.loads(json.dumps(one(rendered["default"], "RayCluster")))
    rc["spec"]["workerGroupSpecs"][0]["replica"] = 2
    with pytest.raises(SchemaError, match="replica"):
        validate(rc, KUBE_VERSIONS[-1])
    ds = json.loads(json.dumps(one(rendered["default"], "DaemonSet")))
    ds["spec"]["template"]["spec"]["containers"][0]["securityContext"]["readOnlyRootFs"] = True
    with pytest.raises(SchemaError, match="readOnlyRootFs"):
        validate(ds, KUBE_VERSIONS[-1])


@pytest.mark.parametrize("case", list(VALUES))
def test_ray_cluster_gpu_workers_and_host_label(rendered: dict[str, list[dict[str, Any]]], case: str) -> None:
    docs = rendered[case]
    rc = one(docs, "RayCluster")["spec"]
    [group] = rc["workerGroupSpecs"]
    worker = group["template"]["spec"]
    [c] = worker["containers"]
    gpus = VALUES[case].get("ray", {}).get("workers", {}).get("gpus", 1)
    assert c["resources"]["limits"]["nvidia.com/gpu"] == gpus == c["resources"]["requests"]["nvidia.com/gpu"]
    assert all(t["key"] != TAINT_KEY for t in worker.get("tolerations", [])), "workers must avoid cordoned nodes"
    if case == "gpu":
        assert worker["nodeSelector"]["nvidia.com/gpu.present"] == "true"
        assert rc["gcsFaultToleranceOptions"]["redisAddress"] == "redis-master.training.svc:6379"
        assert rc["gcsFaultToleranceOptions"]["redisPassword"]["valueFrom"]["secretKeyRef"]["name"] == "redis"
    else:
        assert "gcsFaultToleranceOptions" not in rc
    for spec in (rc["headGroupSpec"]["template"]["spec"], worker):
        shm = next(v for v in spec["volumes"] if v["name"] == "dshm")
        assert shm["emptyDir"]["medium"] == "Memory"
        [c] = spec["containers"]
        assert {"name": "dshm", "mountPath": "/dev/shm"} in c["volumeMounts"]
        env = env_of(c)
        assert env["NODE_NAME"] == {"fieldRef": {"fieldPath": "spec.nodeName"}}
        assert json.loads(env["RAY_OVERRIDE_LABELS"]) == {"host": "$(NODE_NAME)"}
        names = [e["name"] for e in c["env"]]
        assert names.index("NODE_NAME") < names.index("RAY_OVERRIDE_LABELS"), "$(NODE_NAME) expands only if earlier"


def test_host_label_through_ray_start_params() -> None:
    docs = render({"ray": {"hostLabel": "rayStartParams"}})
    rc = one(docs, "RayCluster")["spec"]
    assert rc["workerGroupSpecs"][0]["rayStartParams"]["labels"] == "host=$(NODE_NAME)"
    assert rc["headGroupSpec"]["rayStartParams"]["labels"] == "host=$(NODE_NAME)"
    assert "RAY_OVERRIDE_LABELS" not in env_of(rc["headGroupSpec"]["template"]["spec"]["containers"][0])
    validate(one(docs, "RayCluster"), KUBE_VERSIONS[-1])


@pytest.mark.parametrize("case", list(VALUES))
def test_submitter_and_job_file(rendered: dict[str, list[dict[str, Any]]], case: str, tmp_path: Path) -> None:
    docs = rendered[case]
    job = one(docs, "Job")
    assert job["metadata"]["annotations"]["helm.sh/hook"] == "post-install,post-upgrade"
    [c] = job["spec"]["template"]["spec"]["containers"]
    script = c["args"][0]
    assert "orchestrator submit /etc/orchestrator/job.yaml --address auto --no-follow" in script
    assert env_of(c)["RAY_DASHBOARD"] == f"http://train-orchestrator-head-svc.{NAMESPACE}.svc:8265"
    assert env_of(c)["RAY_AUTH_TOKEN"]["secretKeyRef"] == {"name": "train-orchestrator", "key": "auth_token"}
    file = VALUES[case].get("job", {}).get("file") or yaml.safe_load((CHART / "values.yaml").read_text())["job"]["file"]
    digest = hashlib.sha256(file.encode()).hexdigest()[:10]
    assert env_of(c)["SUBMISSION_ID"] == f"{yaml.safe_load(file)['name']}-{digest}", "one submission per job file"
    cm = next(d for d in docs if d["kind"] == "ConfigMap" and d["metadata"]["name"] == "train-orchestrator-job")
    path = tmp_path / "job.yaml"
    path.write_text(cm["data"]["job.yaml"])
    spec = load_job_file(path, check_data=False)  # the project's own validation of a job file
    assert spec.name == yaml.safe_load(VALUES[case].get("job", {}).get("file", "name: example"))["name"]
    head = one(docs, "RayCluster")["spec"]["headGroupSpec"]["template"]["spec"]
    assert {"name": "job-file", "configMap": {"name": "train-orchestrator-job"}} in head["volumes"]


@pytest.mark.parametrize("case", list(VALUES))
def test_pods_are_non_root_and_read_only_where_they_can_be(rendered: dict[str, list[dict[str, Any]]],
                                                           case: str) -> None:
    for name, spec in pod_specs(rendered[case]).items():
        assert spec["securityContext"]["runAsNonRoot"] is True, name
        assert spec["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}, name
        for c in spec["containers"]:
            sc = c["securityContext"]
            assert sc["allowPrivilegeEscalation"] is False and sc["capabilities"]["drop"] == ["ALL"], name
            assert sc["readOnlyRootFilesystem"] is (name in ("Job", "DaemonSet")), name


@pytest.mark.parametrize("case", list(VALUES))
def test_catalog_url_and_state_volume(rendered: dict[str, list[dict[str, Any]]], case: str) -> None:
    docs = rendered[case]
    secret = GPU_VALUES["catalog"]["existingSecret"] if case == "gpu" else None
    for name, spec in pod_specs(docs).items():
        if name in ("DaemonSet", "Job"):  # neither opens the catalog
            continue
        env = env_of(spec["containers"][0])
        if secret:
            assert env["ORCHESTRATOR_DB"] == {"secretKeyRef": {"name": secret, "key": "url"}}, name
        else:
            assert "ORCHESTRATOR_DB" not in env, name
    pvc = one(docs, "PersistentVolumeClaim")
    assert pvc["spec"]["accessModes"] == ["ReadWriteMany"]
    assert not [d for d in docs if d["kind"] == "Secret"], "a Secret was made though none was asked for"
    made = render({"catalog": {"url": "postgresql://u:p@db:5432/orchestrator"}})
    s = one(made, "Secret")
    assert s["stringData"] == {"url": "postgresql://u:p@db:5432/orchestrator"}
    head = pod_specs(made)["head"]["containers"][0]
    assert env_of(head)["ORCHESTRATOR_DB"]["secretKeyRef"]["name"] == s["metadata"]["name"]


def test_health_agent_on_gpu_nodes_with_nvml(rendered: dict[str, list[dict[str, Any]]]) -> None:
    ds = one(rendered["gpu"], "DaemonSet")["spec"]["template"]["spec"]
    assert ds["nodeSelector"] == {"nvidia.com/gpu.present": "true"} and ds["runtimeClassName"] == "nvidia"
    [c] = ds["containers"]
    assert env_of(c)["NVIDIA_VISIBLE_DEVICES"] == "all" and "utility" in env_of(c)["NVIDIA_DRIVER_CAPABILITIES"]
    assert c["command"][0] == "nvidia-smi" and "--loop=30" in c["command"]
    assert "nvidia.com/gpu" not in c.get("resources", {}).get("limits", {}), "the agent must not take a GPU"
    assert any(t["key"] == TAINT_KEY for t in ds["tolerations"]), "the agent stays on a cordoned node"


def test_rbac_is_least_privilege(rendered: dict[str, list[dict[str, Any]]]) -> None:
    docs = rendered["default"]
    assert one(docs, "ClusterRole")["rules"] == [{"apiGroups": [""], "resources": ["nodes"],
                                                  "verbs": ["get", "list", "patch"]}]
    role = one(docs, "Role")
    assert role["rules"] == [{"apiGroups": [""], "resources": ["events"], "verbs": ["create"]}]
    assert role["metadata"]["namespace"] == one(docs, "RoleBinding")["metadata"]["namespace"] == "default", \
        "the API server takes Node events only in default"
    specs = pod_specs(docs)
    sa = specs["head"]["serviceAccountName"]
    for binding in (one(docs, "ClusterRoleBinding"), one(docs, "RoleBinding")):
        assert binding["subjects"] == [{"kind": "ServiceAccount", "name": sa, "namespace": NAMESPACE}]
    assert env_of(specs["head"]["containers"][0])["ORCHESTRATOR_K8S_REMEDIATION"] == "1"
    for name, spec in specs.items():
        if name != "head":
            assert spec["serviceAccountName"] != sa and spec["automountServiceAccountToken"] is False, name


def test_remediation_off_grants_nothing() -> None:
    docs = render({"remediation": {"enabled": False}})
    assert not {"ClusterRole", "ClusterRoleBinding", "Role", "RoleBinding"} & {d["kind"] for d in docs}
    head = pod_specs(docs)["head"]
    assert env_of(head["containers"][0])["ORCHESTRATOR_K8S_REMEDIATION"] == "0"
    sa = next(d for d in docs if d["kind"] == "ServiceAccount" and d["metadata"]["name"] == head["serviceAccountName"])
    assert sa["automountServiceAccountToken"] is False


def test_metrics_service_dashboard_and_rules(rendered: dict[str, list[dict[str, Any]]]) -> None:
    docs = rendered["gpu"]
    svc = one(docs, "Service", "metrics")
    head = one(docs, "RayCluster")["spec"]["headGroupSpec"]["template"]
    assert svc["spec"]["selector"].items() <= head["metadata"]["labels"].items()
    port = svc["spec"]["ports"][0]
    assert {"name": port["targetPort"], "containerPort": port["port"]} in head["spec"]["containers"][0]["ports"]
    assert head["metadata"]["annotations"]["prometheus.io/port"] == str(port["port"])
    sm = one(docs, "ServiceMonitor")
    assert sm["spec"]["selector"]["matchLabels"].items() <= svc["metadata"]["labels"].items()
    assert sm["metadata"]["labels"]["release"] == "kube-prometheus-stack"
    cm = next(d for d in docs if d["metadata"]["name"].endswith("-dashboard"))
    assert cm["metadata"]["labels"]["grafana_dashboard"] == "1"
    assert json.loads(cm["data"]["reliability.json"]) == json.loads((CHART / "files" / "reliability.json").read_text())
    rule = one(docs, "PrometheusRule")
    assert rule["spec"]["groups"] == yaml.safe_load((CHART / "files" / "alerts.yaml").read_text())["groups"]
    default_kinds = {d["kind"] for d in rendered["default"]}
    assert not {"ServiceMonitor", "PrometheusRule"} & default_kinds, "optional, off by default"


@pytest.mark.parametrize(("chart_file", "source"), [("reliability.json", "reliability.json"),
                                                    ("alerts.yaml", "alerts.yml")])
def test_chart_assets_are_the_committed_ones(chart_file: str, source: str) -> None:
    committed = REPO / "dashboards" / source
    if not committed.exists():
        pytest.skip(f"dashboards/{source} is not in this tree yet")
    assert (CHART / "files" / chart_file).read_bytes() == committed.read_bytes(), "run `make chart-assets`"


@pytest.mark.parametrize(("values", "message"), [
    ({"ray": {"gcsFaultTolerance": {"enabled": True}}}, "ray.gcsFaultTolerance.enabled needs"),
    ({"ray": {"hostLabel": "label"}}, "/ray/hostLabel"),
    ({"job": {"file": ""}}, "job.file: the job file to run"),
    ({"ray": {"worker": {"gpus": 8}}}, "additional properties 'worker' not allowed"),  # values.schema.json
    ({"ray": {"workers": {"gpus": "eight"}}}, "/ray/workers/gpus"),
])
def test_bad_values_fail_with_one_clear_message(values: dict[str, Any], message: str) -> None:
    with pytest.raises(helm.HelmError, match=message):
        render(values)
