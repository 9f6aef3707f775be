"""deploy/k8s: schema-valid for the Kubernetes versions we support, and consistent with the
image and the service's own settings (ports, probes, user, drain timing)."""

from __future__ import annotations

import math
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from benchmarks.balancer import Checks
from service.lifecycle import EXECUTOR_GRACE_S
from service.settings import PREFIX, Settings
from tests.deploy.conftest import K8S, REPO, Dockerfile

# Oldest supported (preStop `sleep` action is on by default from 1.30) and newest shipped.
K8S_VERSIONS = ("1.30.0", "1.37.0")
APP_LABELS = {"app.kubernetes.io/name": "tweet-sentiment", "app.kubernetes.io/component": "api"}
SHUTDOWN_MARGIN_S = 5  # lifespan teardown after the last request: scheduler, thread pool


def kubernetes_validate() -> str:
    found = shutil.which("kubernetes-validate") or str(
        Path(sys.executable).with_name("kubernetes-validate")
    )
    if not Path(found).is_file():
        pytest.fail("kubernetes-validate not found: install the test extra")
    return found


def validate(files: list[Path], version: str) -> subprocess.CompletedProcess[str]:
    command = [kubernetes_validate(), "--strict", "-k", version, *map(str, files)]
    return subprocess.run(command, capture_output=True, text=True, timeout=120)


def container(manifests: dict[str, dict[str, Any]]) -> dict[str, Any]:
    containers = manifests["Deployment"]["spec"]["template"]["spec"]["containers"]
    assert len(containers) == 1
    spec: dict[str, Any] = containers[0]
    return spec


def container_env(manifests: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {item["name"]: item for item in container(manifests).get("env", [])}


def literal_env(manifests: dict[str, dict[str, Any]]) -> dict[str, str]:
    return {k: v["value"] for k, v in container_env(manifests).items() if "value" in v}


@pytest.mark.parametrize("version", K8S_VERSIONS)
def test_kubernetes_validate_passes(version: str) -> None:
    files = sorted(K8S.glob("*.yaml"))
    assert len(files) >= 4
    result = validate(files, version)
    assert result.returncode == 0, result.stdout + result.stderr


def test_kubernetes_validate_rejects_a_typo(tmp_path: Path) -> None:
    """Control: --strict really rejects an unknown field, so a pass above means something."""
    text = (K8S / "deployment.yaml").read_text()
    bad = tmp_path / "deployment.yaml"
    bad.write_text(text.replace("terminationGracePeriodSeconds:", "terminationGracePeriod:"))
    assert validate([bad], K8S_VERSIONS[-1]).returncode != 0


def test_the_four_objects_select_the_same_pods(manifests: dict[str, dict[str, Any]]) -> None:
    assert {"Deployment", "Service", "HorizontalPodAutoscaler", "PodDisruptionBudget"} <= set(
        manifests
    )
    deployment = manifests["Deployment"]
    pod_labels = deployment["spec"]["template"]["metadata"]["labels"]
    assert pod_labels.items() >= APP_LABELS.items()
    assert deployment["spec"]["selector"]["matchLabels"] == APP_LABELS
    assert manifests["Service"]["spec"]["selector"] == APP_LABELS
    assert manifests["PodDisruptionBudget"]["spec"]["selector"]["matchLabels"] == APP_LABELS
    target = manifests["HorizontalPodAutoscaler"]["spec"]["scaleTargetRef"]
    assert target == {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "name": deployment["metadata"]["name"],
    }


def test_autoscaling_on_cpu_keeps_a_pod_through_disruptions(
    manifests: dict[str, dict[str, Any]],
) -> None:
    hpa = manifests["HorizontalPodAutoscaler"]["spec"]
    assert "replicas" not in manifests["Deployment"]["spec"], "the HPA owns the replica count"
    assert hpa["minReplicas"] >= 2 and hpa["maxReplicas"] > hpa["minReplicas"]
    (metric,) = hpa["metrics"]
    assert metric["type"] == "Resource" and metric["resource"]["name"] == "cpu"
    assert 0 < metric["resource"]["target"]["averageUtilization"] < 100
    pdb = manifests["PodDisruptionBudget"]["spec"]
    assert pdb.get("maxUnavailable") == 1 or pdb.get("minAvailable") == hpa["minReplicas"] - 1
    strategy = manifests["Deployment"]["spec"]["strategy"]["rollingUpdate"]
    assert strategy["maxUnavailable"] == 0, "rollouts never drop below the current capacity"


def test_ports_and_probes_match_the_image(
    manifests: dict[str, dict[str, Any]], dockerfile: Dockerfile
) -> None:
    spec = container(manifests)
    (port,) = spec["ports"]
    image_port = int(dockerfile.runtime.env()["SENTIMENT_PORT"])
    assert port["containerPort"] == image_port
    assert int(literal_env(manifests).get("SENTIMENT_PORT", image_port)) == image_port
    service_port = manifests["Service"]["spec"]["ports"][0]
    assert service_port["targetPort"] in (port["name"], image_port)
    assert spec["readinessProbe"]["httpGet"]["path"] == "/ready"
    assert spec["livenessProbe"]["httpGet"]["path"] == "/health"
    assert spec["startupProbe"]["httpGet"]["path"] == "/health"
    for probe in ("readinessProbe", "livenessProbe", "startupProbe"):
        assert spec[probe]["httpGet"]["port"] in (port["name"], image_port)


def test_image_and_user_match_the_dockerfile_and_makefile(
    manifests: dict[str, dict[str, Any]], dockerfile: Dockerfile
) -> None:
    tag = re.search(r"docker build\b.*?-t\s+(\S+)", (REPO / "Makefile").read_text())
    assert tag is not None, "Makefile has no `docker build -t` target"
    assert container(manifests)["image"] == tag[1]
    pod = manifests["Deployment"]["spec"]["template"]["spec"]
    user = dockerfile.runtime.last("USER")
    assert user is not None
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert str(pod["securityContext"]["runAsUser"]) == user.args.split(":")[0]
    hardening = container(manifests)["securityContext"]
    assert hardening["readOnlyRootFilesystem"] is True
    assert hardening["allowPrivilegeEscalation"] is False
    assert hardening["capabilities"]["drop"] == ["ALL"]
    mounts = {m["mountPath"] for m in container(manifests).get("volumeMounts", [])}
    assert "/tmp" in mounts, "workers > 1 keep Prometheus files in a temp dir"
    assert pod.get("enableServiceLinks") is False, "service links can inject SENTIMENT_PORT"


def test_one_pod_is_the_benchmark_machine(manifests: dict[str, dict[str, Any]]) -> None:
    """2 vCPU, requests == limits (Guaranteed QoS), one single-threaded run per CPU of the limit."""
    resources = container(manifests)["resources"]
    assert resources["requests"] == resources["limits"]
    assert str(resources["limits"]["cpu"]) == "2"
    pool = container_env(manifests)["SENTIMENT_POOL_SIZE"]["valueFrom"]["resourceFieldRef"]
    assert pool["resource"] == "limits.cpu" and str(pool["divisor"]) == "1"
    assert literal_env(manifests)["SENTIMENT_THREADS"] == "1"
    assert literal_env(manifests)["SENTIMENT_WORKERS"] == "1"


def test_environment_is_valid_settings(manifests: dict[str, dict[str, Any]]) -> None:
    env = container_env(manifests)
    known = {PREFIX + name.upper() for name in Settings.__dataclass_fields__}
    assert env.keys() <= known, f"unknown settings: {sorted(env.keys() - known)}"
    Settings.from_env(literal_env(manifests))  # raises SettingsError on a bad value
    secret = env["SENTIMENT_API_KEY"]["valueFrom"]["secretKeyRef"]
    assert secret["optional"] is True, "the API key is opt-in; pods must start without it"


def test_grace_period_covers_prestop_and_the_drain(manifests: dict[str, dict[str, Any]]) -> None:
    """kubelet kills at terminationGracePeriodSeconds, counted from the start of preStop."""
    pod = manifests["Deployment"]["spec"]["template"]["spec"]
    # Settings refuses a shutdown timeout shorter than the longest accepted request (two
    # request timeouts), so reading the manifest's values is the check that the drain covers it.
    settings = Settings.from_env(literal_env(manifests))
    pre_stop = container(manifests)["lifecycle"]["preStop"]["sleep"]["seconds"]
    assert pre_stop >= 3, "endpoint removal needs a few seconds to reach every node"
    needed = (
        pre_stop
        + settings.drain_delay_s
        + math.ceil(settings.shutdown_timeout_s)
        + EXECUTOR_GRACE_S
        + SHUTDOWN_MARGIN_S
    )
    assert pod["terminationGracePeriodSeconds"] >= needed


def readiness_checks(manifests: dict[str, dict[str, Any]]) -> Checks:
    """The readiness probe as the balancer stage's health checks (period = inter)."""
    probe = container(manifests)["readinessProbe"]
    return Checks(
        inter_ms=probe["periodSeconds"] * 1000,
        fall=probe["failureThreshold"],
        rise=probe.get("successThreshold", 1),
        timeout_ms=probe["timeoutSeconds"] * 1000,
    )


def test_the_drain_outlasts_the_readiness_probe(manifests: dict[str, dict[str, Any]]) -> None:
    """/ready stays 503 after SIGTERM until a prober has seen it fail (failureThreshold x
    periodSeconds) plus one late probe, the rule the balancer stage sizes HAProxy's drain by."""
    settings = Settings.from_env(literal_env(manifests))
    checks = readiness_checks(manifests)
    assert container(manifests)["readinessProbe"]["httpGet"]["path"] == "/ready"
    assert checks.timeout_ms <= checks.inter_ms, "a probe ends before the next one starts"
    assert settings.drain_delay_s >= checks.drain_delay_s > checks.down_within_s


def test_a_rollout_replaces_one_pod_at_a_time(manifests: dict[str, dict[str, Any]]) -> None:
    """What the balancer stage's rollout did: a new pod Ready before an old one drains."""
    strategy = manifests["Deployment"]["spec"]["strategy"]
    assert strategy["type"] == "RollingUpdate"
    assert strategy["rollingUpdate"]["maxUnavailable"] == 0
    assert strategy["rollingUpdate"]["maxSurge"] == 1


def test_kustomization_covers_every_manifest(manifests: dict[str, dict[str, Any]]) -> None:
    kustomization = yaml.safe_load((K8S.parent / "kustomization.yaml").read_text())
    listed = {K8S.parent / r for r in kustomization["resources"]}
    assert listed == set(K8S.glob("*.yaml"))
    image = container(manifests)["image"].rsplit(":", 1)[0]
    assert [i["name"] for i in kustomization["images"]] == [image]
