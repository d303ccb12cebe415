"""infra/k8s: the manifests follow the project's declarations, and every rendered manifest is
valid against the real schemas (kubeconform -strict with KubeRay's, the Prometheus Operator's
and Kubernetes' own; Strimzi's compiled validators), offline.

The tools and schemas come from ``infra/k8s/validate.sh fetch`` (run by .ci/run before the
tests); without them these tests fail and say to run it.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
K8S = ROOT / "infra/k8s"
CACHE = Path(os.environ.get("STREAMINFER_K8S_CACHE", Path.home() / ".cache/streaminfer/k8s"))


def _clean_env() -> dict[str, str]:
    env = {name: value for name, value in os.environ.items() if not name.startswith("STREAMINFER_")}
    env["PYTHON"] = sys.executable
    if "STREAMINFER_K8S_CACHE" in os.environ:
        env["STREAMINFER_K8S_CACHE"] = os.environ["STREAMINFER_K8S_CACHE"]
    return env


def validate(*overlays: Path) -> subprocess.CompletedProcess[str]:
    if not (CACHE / ".fetched").is_file():
        pytest.fail(f"no kustomize, kubeconform or schemas in {CACHE}: run `bash infra/k8s/validate.sh fetch` "
                    "once (it needs the package registries), then the tests again")
    command = ["bash", str(K8S / "validate.sh"), "validate", *map(str, overlays)]
    return subprocess.run(command, check=False, capture_output=True, text=True, env=_clean_env(), timeout=300)


def overlay_with(tmp_path: Path, patch: dict) -> Path:
    """A kustomization of the dev overlay plus one JSON patch (kustomize wants relative roots)."""
    (tmp_path / "kustomization.yaml").write_text(yaml.safe_dump({
        "resources": [os.path.relpath(K8S / "overlays/dev", tmp_path)],
        "patches": [patch],
    }))
    return tmp_path


def test_the_topic_and_user_manifests_are_what_the_declarations_generate():
    result = subprocess.run([sys.executable, str(K8S / "generate.py"), "--check"],
                            check=False, capture_output=True, text=True, env=_clean_env(), timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr


def test_every_overlay_renders_and_validates_against_the_real_schemas():
    result = validate()
    assert result.returncode == 0, result.stdout + result.stderr
    overlays = [line for line in result.stdout.splitlines() if line.startswith("== ")]
    assert len(overlays) == 2, result.stdout
    assert result.stdout.count("Invalid: 0, Errors: 0") == 2, result.stdout  # kubeconform
    assert result.stdout.count(" documents, 0 invalid") == 2, result.stdout  # the Strimzi kinds


def test_a_field_the_raycluster_crd_does_not_know_is_refused(tmp_path):
    result = validate(overlay_with(tmp_path, {
        "target": {"kind": "RayCluster"},
        "patch": '[{"op": "add", "path": "/spec/headGroupSpec/rayStartParam", "value": {}}]',
    }))
    assert result.returncode != 0
    assert "additional properties 'rayStartParam' not allowed" in result.stdout


def test_a_kafka_topic_without_replicas_is_refused_by_strimzis_schema(tmp_path):
    result = validate(overlay_with(tmp_path, {
        "target": {"kind": "KafkaTopic", "name": "inference.requests"},
        "patch": '[{"op": "replace", "path": "/spec/replicas", "value": 0}]',
    }))
    assert result.returncode != 0
    assert "KafkaTopic inference.requests: /spec/replicas minimum" in result.stdout


def test_a_field_strimzis_crd_does_not_know_is_refused(tmp_path):
    result = validate(overlay_with(tmp_path, {
        "target": {"kind": "Kafka", "name": "streaminfer"},
        "patch": '[{"op": "add", "path": "/spec/kafka/listener", "value": []}]',
    }))
    assert result.returncode != 0
    assert "Kafka streaminfer: TS2353" in result.stdout and "'\"listener\"' does not exist" in result.stdout


@pytest.fixture(scope="module")
def rendered() -> dict[str, list[dict]]:
    """Each overlay rendered by the pinned kustomize."""
    if not (CACHE / "bin/kustomize").is_file():
        pytest.fail(f"no kustomize in {CACHE}: run `bash infra/k8s/validate.sh fetch`")
    return {name: list(yaml.safe_load_all(subprocess.run(
        [str(CACHE / "bin/kustomize"), "build", str(K8S / "overlays" / name)],
        capture_output=True, text=True, check=True, timeout=120).stdout)) for name in ("dev", "prod")}


def _one(documents: list[dict], kind: str) -> dict:
    (document,) = [d for d in documents if d["kind"] == kind]
    return document


@pytest.mark.parametrize(("overlay", "nodes", "replicas", "min_insync"), [("dev", 1, 1, 1), ("prod", 3, 3, 2)])
def test_topics_are_replicated_as_the_brokers_allow(rendered, overlay, nodes, replicas, min_insync):
    documents = rendered[overlay]
    assert _one(documents, "KafkaNodePool")["spec"]["replicas"] == nodes
    config = _one(documents, "Kafka")["spec"]["kafka"]["config"]
    assert (config["default.replication.factor"], config["min.insync.replicas"]) == (replicas, min_insync)
    topics = [d for d in documents if d["kind"] == "KafkaTopic"]
    assert topics and {t["spec"]["replicas"] for t in topics} == {replicas}
    settings = [d for d in documents if d["kind"] == "ConfigMap" and d["metadata"]["name"].startswith("streaminfer-settings")]
    assert settings[0]["data"]["STREAMINFER_TOPICS__REPLICATION_FACTOR"] == str(replicas)


def test_processes_serve_metrics_on_every_interface_and_take_secrets_from_secrets(rendered):
    documents = rendered["prod"]
    (settings,) = [d for d in documents if d["kind"] == "ConfigMap" and d["metadata"]["name"].startswith("streaminfer-settings")]
    assert settings["data"]["STREAMINFER_METRICS__HOST"] == "0.0.0.0"
    assert not any("PASSWORD" in key or "SECRET" in key for key in settings["data"])
    for deployment in (d for d in documents if d["kind"] == "Deployment"):
        for container in deployment["spec"]["template"]["spec"]["containers"]:
            for variable in container.get("env", []):
                if any(word in variable["name"] for word in ("PASSWORD", "SECRET")):
                    assert "secretKeyRef" in variable.get("valueFrom", {}), (deployment["metadata"]["name"], variable)


def test_the_gpu_worker_group_requests_gpus_and_the_driver_joins_the_ray_cluster(rendered):
    documents = rendered["prod"]
    cluster = _one(documents, "RayCluster")
    (gpu,) = [g for g in cluster["spec"]["workerGroupSpecs"] if g["groupName"] == "gpu"]
    assert gpu["template"]["spec"]["containers"][0]["resources"]["limits"]["nvidia.com/gpu"] == "1"
    (driver,) = [d for d in documents if d["kind"] == "Deployment" and d["metadata"]["name"] == "streaminfer-driver"]
    args = driver["spec"]["template"]["spec"]["containers"][0]["args"]
    assert args[:2] == ["streaminfer", "run"]
    assert args[args.index("--ray-address") + 1] == f"ray://{cluster['metadata']['name']}-head-svc:10001"


def test_the_dashboard_config_map_is_the_dashboard_file(rendered):
    (dashboard,) = [d for d in rendered["dev"] if d["kind"] == "ConfigMap" and d["metadata"]["name"] == "streaminfer-dashboard"]
    source = ROOT / "infra/grafana/streaminfer-dashboard.json"
    assert dashboard["data"]["streaminfer-dashboard.json"] == source.read_text()


def test_the_driver_gets_every_alert_receivers_signing_key_from_a_secret(rendered):
    documents = rendered["prod"]
    (driver,) = [d for d in documents if d["kind"] == "Deployment" and d["metadata"]["name"] == "streaminfer-driver"]
    container = driver["spec"]["template"]["spec"]["containers"][0]
    env = {variable["name"]: variable for variable in container["env"]}
    rules = yaml.safe_load((ROOT / "infra/alerts/rules.yml").read_text())
    for receiver in rules["receivers"]:
        assert "secretKeyRef" in env[receiver["secret_env"]]["valueFrom"], receiver["name"]
    mounted = {m["name"]: m["mountPath"] for m in container["volumeMounts"]}
    args = container["args"]
    assert args[args.index("--alerts") + 1] == f"{mounted['alert-rules']}/rules.yml"
