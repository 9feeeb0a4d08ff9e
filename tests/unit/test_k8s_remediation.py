"""Node remediation against a loopback Kubernetes API that the real kubernetes client talks to.

No API server runs here: `FakeKubeApi` answers GET/PATCH of nodes and POST of
events as the real one does (merge patches, resourceVersion preconditions,
409s, schema-checked objects), and fails chosen requests for real.
"""

from __future__ import annotations

import copy
import json
import socket
import time
from pathlib import Path

import pytest
import yaml
from kubernetes import client
from typer.testing import CliRunner

from orchestrator.catalog.repository import Catalog
from orchestrator.controller.callbacks import HostAction, InterruptionRecord
from orchestrator.k8s.callback import NodeRemediationCallback
from orchestrator.k8s.nodes import (
    CATEGORY_LABEL,
    CORDONED_LABEL,
    PENDING_EVENT_ANNOTATION,
    TAINT_KEY,
    NodeRemediator,
    RemediationError,
)
from tests.unit.fake_kube_api import FakeKubeApi, FakeKubeServer

EVENTS = "/api/v1/namespaces/default/events"
FOREIGN_TAINT = {"key": "nvidia.com/gpu", "value": "present", "effect": "NoSchedule"}


@pytest.fixture
def kube():
    api = FakeKubeApi()
    api.add_node("gpu-a", taints=[FOREIGN_TAINT], labels={"nvidia.com/gpu.product": "H100"})
    api.add_node("gpu-b", unschedulable=True)
    with FakeKubeServer(api) as srv:
        yield srv


def remediator(url: str) -> NodeRemediator:
    cfg = client.Configuration(host=url)
    return NodeRemediator(client.CoreV1Api(client.ApiClient(cfg)), instance="controller-test")


def comparable(node: dict) -> dict:
    n = copy.deepcopy(node)
    n["metadata"].pop("resourceVersion")
    return n


def requests(api: FakeKubeApi, method: str) -> int:
    return sum(1 for r in api.requests if r[0] == method)


def test_cordon_taints_labels_and_posts_an_event(kube: FakeKubeServer) -> None:
    out = remediator(kube.url).cordon("gpu-a", category="faulty_gpu", reason="Xid 79 on GPU 3",
                                      interruption="job llama attempt 2 crash")
    node = kube.api.nodes["gpu-a"]
    assert out.changed and out.event
    assert node["spec"]["unschedulable"] is True
    taints = {t["key"]: t for t in node["spec"]["taints"]}
    assert taints[TAINT_KEY]["value"] == "faulty_gpu" and taints[TAINT_KEY]["effect"] == "NoSchedule"
    assert taints["nvidia.com/gpu"] == FOREIGN_TAINT, "someone else's taint was lost"
    labels = node["metadata"]["labels"]
    assert labels[CORDONED_LABEL] == "true" and labels[CATEGORY_LABEL] == "faulty_gpu"
    assert labels["nvidia.com/gpu.product"] == "H100"
    assert PENDING_EVENT_ANNOTATION not in node["metadata"]["annotations"]
    [(ns, name)] = kube.api.events
    ev = kube.api.events[(ns, name)]
    assert ns == "default" and name == out.event, "node events live in default, as the kubelet's do"
    assert ev["involvedObject"] == {"apiVersion": "v1", "kind": "Node", "name": "gpu-a", "uid": "uid-gpu-a"}
    assert ev["type"] == "Warning" and ev["reason"] == "OrchestratorCordoned"
    assert "job llama attempt 2 crash" in ev["message"] and "faulty_gpu" in ev["message"]
    assert "Xid 79 on GPU 3" in ev["message"]


def test_cordon_again_changes_nothing(kube: FakeKubeServer) -> None:
    r = remediator(kube.url)
    r.cordon("gpu-a", category="faulty_gpu", reason="Xid 79")
    before, patches = copy.deepcopy(kube.api.nodes["gpu-a"]), requests(kube.api, "PATCH")
    out = r.cordon("gpu-a", category="faulty_gpu", reason="Xid 79")
    assert not out.changed and out.event is None
    assert kube.api.nodes["gpu-a"] == before
    assert requests(kube.api, "PATCH") == patches and len(kube.api.events) == 1


def test_uncordon_undoes_everything(kube: FakeKubeServer) -> None:
    r = remediator(kube.url)
    original = comparable(kube.api.nodes["gpu-a"])
    r.cordon("gpu-a", category="gpu_hbm3_memory", reason="Xid 48")
    out = r.uncordon("gpu-a", reason="GPU replaced")
    assert out.changed
    assert comparable(kube.api.nodes["gpu-a"]) == {**original, "metadata": {**original["metadata"],
                                                                            "annotations": {}}}
    kinds = sorted((e["type"], e["reason"]) for e in kube.api.events.values())
    assert kinds == [("Normal", "OrchestratorUncordoned"), ("Warning", "OrchestratorCordoned")]
    again = r.uncordon("gpu-a", reason="GPU replaced")
    assert not again.changed and len(kube.api.events) == 2


def test_uncordon_leaves_a_node_that_was_cordoned_before_us_cordoned(kube: FakeKubeServer) -> None:
    r = remediator(kube.url)
    r.cordon("gpu-b", category="nic", reason="mlx5 health compromised")
    r.uncordon("gpu-b", reason="NIC replaced")
    node = kube.api.nodes["gpu-b"]
    assert node["spec"].get("unschedulable") is True
    assert "taints" not in node["spec"] and CORDONED_LABEL not in node["metadata"]["labels"]


def test_a_failed_patch_changes_nothing_and_a_retry_finishes(kube: FakeKubeServer) -> None:
    r = remediator(kube.url)
    before = copy.deepcopy(kube.api.nodes["gpu-a"])
    kube.api.fail("PATCH", "/api/v1/nodes/gpu-a", 500)
    with pytest.raises(RemediationError) as e:
        r.cordon("gpu-a", category="faulty_gpu", reason="Xid 79")
    line = str(e.value)
    assert "\n" not in line and "gpu-a" in line and "HTTP 500" in line and "injected 500" in line
    assert kube.api.nodes["gpu-a"] == before and not kube.api.events
    out = r.cordon("gpu-a", category="faulty_gpu", reason="Xid 79")
    assert out.changed and kube.api.nodes["gpu-a"]["spec"]["unschedulable"] is True and len(kube.api.events) == 1


def test_an_event_that_fails_after_the_node_patch_is_posted_by_the_retry(kube: FakeKubeServer) -> None:
    r = remediator(kube.url)
    kube.api.fail("POST", EVENTS, 503)
    with pytest.raises(RemediationError) as e:
        r.cordon("gpu-a", category="faulty_gpu", reason="Xid 79", interruption="job j attempt 1 crash")
    assert "HTTP 503" in str(e.value) and "a retry posts the event" in str(e.value)
    node = kube.api.nodes["gpu-a"]
    assert node["spec"]["unschedulable"] is True and not kube.api.events
    pending = json.loads(node["metadata"]["annotations"][PENDING_EVENT_ANNOTATION])
    patches = requests(kube.api, "PATCH")
    out = r.cordon("gpu-a", category="faulty_gpu", reason="Xid 79", interruption="job j attempt 1 crash")
    assert not out.changed and out.event == pending["name"]
    assert [name for _, name in kube.api.events] == [pending["name"]]
    assert PENDING_EVENT_ANNOTATION not in kube.api.nodes["gpu-a"]["metadata"]["annotations"]
    assert requests(kube.api, "PATCH") == patches + 1, "only the record of the posted event is cleared"


def test_an_event_posted_before_a_failed_clear_is_not_posted_twice(kube: FakeKubeServer) -> None:
    r = remediator(kube.url)
    # The node patch succeeds, the event is posted, then clearing its record on the node fails.
    kube.api.before("POST", EVENTS,
                    lambda a: a.fail("PATCH", "/api/v1/nodes/gpu-a", 500))
    with pytest.raises(RemediationError, match="a retry clears it"):
        r.cordon("gpu-a", category="ssd", reason="nvme I/O error")
    assert len(kube.api.events) == 1
    out = r.cordon("gpu-a", category="ssd", reason="nvme I/O error")
    assert not out.changed and len(kube.api.events) == 1
    assert PENDING_EVENT_ANNOTATION not in kube.api.nodes["gpu-a"]["metadata"]["annotations"]


def test_a_concurrent_change_is_kept(kube: FakeKubeServer) -> None:
    """Someone taints the node between our read and our patch: the 409 makes us decide again, keeping theirs."""
    maintenance = {"key": "ops/maintenance", "value": "firmware", "effect": "NoExecute"}
    kube.api.before("PATCH", "/api/v1/nodes/gpu-a", lambda a: a.touch(
        "gpu-a", lambda n: n["spec"]["taints"].append(dict(maintenance))))
    remediator(kube.url).cordon("gpu-a", category="faulty_gpu", reason="Xid 79")
    keys = {t["key"] for t in kube.api.nodes["gpu-a"]["spec"]["taints"]}
    assert keys == {"nvidia.com/gpu", "ops/maintenance", TAINT_KEY}
    assert any(r[0] == "PATCH" for r in kube.api.requests)


@pytest.mark.parametrize(("code", "host", "hint"), [
    (403, "gpu-a", "nodes get/patch and events create"),
    (None, "absent-node", "is the Ray host label the Kubernetes node name?"),
])
def test_api_refusals_are_one_line(kube: FakeKubeServer, code: int | None, host: str, hint: str) -> None:
    if code:
        kube.api.fail("GET", f"/api/v1/nodes/{host}", code)
    with pytest.raises(RemediationError) as e:
        remediator(kube.url).cordon(host, category="faulty_gpu", reason="Xid 79")
    assert "\n" not in str(e.value) and host in str(e.value) and hint in str(e.value)
    assert not any(r[0] == "PATCH" for r in kube.api.requests)


def test_an_unreachable_api_server_is_one_line() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # closed again before the request: connection refused
    cfg = client.Configuration(host=f"http://127.0.0.1:{port}")
    cfg.retries = 0
    r = NodeRemediator(client.CoreV1Api(client.ApiClient(cfg)))
    with pytest.raises(RemediationError) as e:
        r.cordon("gpu-a", category="faulty_gpu", reason="Xid 79")
    assert "\n" not in str(e.value) and "unreachable" in str(e.value)


# ---- the controller callback -------------------------------------------------------------------
def record(*actions: HostAction) -> InterruptionRecord:
    return InterruptionRecord(job="llama", attempt=3, planned=False, kind="crash", category="faulty_gpu",
                              component="gpu", confidence=0.9, explanation="Xid 79 on gpu-a", decision="cordon",
                              hosts=("gpu-a",), host_actions=actions)


def test_callback_cordons_cordoned_hosts_only_and_keeps_failures_queued(kube: FakeKubeServer) -> None:
    cb = NodeRemediationCallback(remediator(kube.url), background=False)
    kube.api.fail("PATCH", "/api/v1/nodes/gpu-a", 503)
    cb.interrupted(record(HostAction("gpu-a", "cordoned", "hardware: faulty_gpu"),
                          HostAction("gpu-b", "suspect", "peer of a hung rank")))
    cb.flush()
    assert set(cb.pending) == {"gpu-a"} and CORDONED_LABEL not in kube.api.nodes["gpu-a"]["metadata"]["labels"]
    cb.flush()  # the API answers again
    assert not cb.pending and cb.wait_idle(0)
    node = kube.api.nodes["gpu-a"]
    assert node["metadata"]["labels"][CATEGORY_LABEL] == "faulty_gpu" and node["spec"]["unschedulable"] is True
    assert CORDONED_LABEL not in kube.api.nodes["gpu-b"]["metadata"]["labels"], "a suspect host is not cordoned"
    [ev] = kube.api.events.values()
    assert "job llama attempt 3 crash" in ev["message"] and "hardware: faulty_gpu" in ev["message"]


def test_callback_never_makes_the_controller_wait(kube: FakeKubeServer) -> None:
    """A slow and failing API server: the hook returns at once, the callback's thread retries until done."""
    cb = NodeRemediationCallback(remediator(kube.url), retry_interval_s=0.05)
    kube.api.before("GET", "/api/v1/nodes/gpu-a", lambda a: time.sleep(1.0))
    kube.api.fail("PATCH", "/api/v1/nodes/gpu-a", 503)
    t0 = time.monotonic()
    cb.interrupted(record(HostAction("gpu-a", "cordoned", "hardware")))
    assert time.monotonic() - t0 < 0.5
    assert cb.wait_idle(30), cb.pending
    assert kube.api.nodes["gpu-a"]["spec"]["unschedulable"] is True
    assert requests(kube.api, "PATCH") >= 3, "the failed patch, the retried one and the clear of the event record"


# ---- the CLI ------------------------------------------------------------------------------------
@pytest.fixture
def cli_catalog(tmp_path: Path, kube: FakeKubeServer, monkeypatch: pytest.MonkeyPatch) -> Path:
    state = tmp_path / "state"
    state.mkdir()
    Catalog(f"sqlite:///{state / 'catalog.db'}").set_host_state("gpu-a", "healthy", reason=None, actor="test",
                                                                  create=True)
    kubeconfig = tmp_path / "kubeconfig"
    kubeconfig.write_text(yaml.safe_dump({
        "apiVersion": "v1", "kind": "Config", "current-context": "fake",
        "clusters": [{"name": "fake", "cluster": {"server": kube.url}}],
        "contexts": [{"name": "fake", "context": {"cluster": "fake", "user": "u"}}],
        "users": [{"name": "u", "user": {"token": "t"}}]}))
    monkeypatch.setenv("KUBECONFIG", str(kubeconfig))
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    monkeypatch.setenv("ORCHESTRATOR_K8S_REMEDIATION", "1")
    return state


def test_hosts_cordon_and_uncordon_carry_over_to_the_node(cli_catalog: Path, kube: FakeKubeServer) -> None:
    from orchestrator.cli.main import app

    run = CliRunner().invoke
    r = run(app, ["hosts", "cordon", "gpu-a", "--reason", "burn-in failed", "--by", "oncall",
                  "--state-dir", str(cli_catalog)])
    assert r.exit_code == 0, r.output
    node = kube.api.nodes["gpu-a"]
    assert node["spec"]["unschedulable"] is True and node["metadata"]["labels"][CATEGORY_LABEL] == "operator"
    assert "burn-in failed" in next(iter(kube.api.events.values()))["message"]
    r = run(app, ["hosts", "uncordon", "gpu-a", "--by", "oncall", "--state-dir", str(cli_catalog)])
    assert r.exit_code == 0, r.output
    assert "unschedulable" not in kube.api.nodes["gpu-a"]["spec"]
    r = run(app, ["hosts", "cordon", "gpu-a", "--no-k8s", "--state-dir", str(cli_catalog)])
    assert r.exit_code == 0 and "unschedulable" not in kube.api.nodes["gpu-a"]["spec"]


def test_hosts_cordon_refused_by_the_api_is_one_line_and_a_rerun_finishes(cli_catalog: Path,
                                                                            kube: FakeKubeServer) -> None:
    from orchestrator.cli.main import app

    kube.api.fail("PATCH", "/api/v1/nodes/gpu-a", 403)
    r = CliRunner().invoke(app, ["hosts", "cordon", "gpu-a", "--state-dir", str(cli_catalog)])
    assert r.exit_code == 1
    lines = [ln for ln in r.output.splitlines() if ln.strip()]
    assert len(lines) == 1 and "HTTP 403" in lines[0] and "run the command again" in lines[0], r.output
    assert "unschedulable" not in kube.api.nodes["gpu-a"]["spec"]
    r = CliRunner().invoke(app, ["hosts", "cordon", "gpu-a", "--state-dir", str(cli_catalog)])
    assert r.exit_code == 0 and kube.api.nodes["gpu-a"]["spec"]["unschedulable"] is True


def test_remediation_is_off_unless_turned_on(cli_catalog: Path, monkeypatch: pytest.MonkeyPatch,
                                             caplog: pytest.LogCaptureFixture) -> None:
    from orchestrator.k8s.callback import callbacks_from_env

    [cb] = callbacks_from_env()  # the fixture turned it on, with a kubeconfig
    assert isinstance(cb, NodeRemediationCallback)
    monkeypatch.setenv("ORCHESTRATOR_K8S_REMEDIATION", "0")
    assert callbacks_from_env() == []
    monkeypatch.setenv("ORCHESTRATOR_K8S_REMEDIATION", "1")
    monkeypatch.setenv("KUBECONFIG", str(cli_catalog / "absent-kubeconfig"))
    assert callbacks_from_env() == []
    [line] = [r.getMessage() for r in caplog.records if r.levelname == "ERROR"]
    assert "no in-cluster service account and no usable kubeconfig" in line and "\n" not in line
