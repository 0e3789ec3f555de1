"""The deployment files under deploy/, checked offline with the ecosystem's tools: yamllint,
kubernetes-validate (the Kubernetes kinds against their openAPI schemas), `kubectl kustomize`
when kubectl is on PATH, KServe's objects against the schema built from KServe's SDK
(tests/deploy_schemas/kserve.json, scripts/kserve_schema.py), the Dockerfile read with Docker's
own parser (the `dockerfile` package); and the settings that must agree across files (ports,
probes, labels, shutdown timing, user)."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import dockerfile
import jsonschema
import kubernetes_validate
import pytest
import yaml
from yamllint import linter
from yamllint.config import YamlLintConfig

ROOT = Path(__file__).resolve().parents[1]
DEPLOY = ROOT / "deploy"
BASE = DEPLOY / "kubernetes" / "base"
KSERVE = DEPLOY / "kserve"
KSERVE_SCHEMA = json.loads((Path(__file__).parent / "deploy_schemas" / "kserve.json").read_text())
# the oldest Kubernetes release the files are written for, and the newest kubernetes-validate knows
K8S_VERSIONS = ("1.30.0", kubernetes_validate.latest_version())
KILL_MARGIN = 2  # seconds between the end of dropin's stop and SIGKILL, at least


def documents(path: Path) -> list[dict[str, Any]]:
    return [doc for doc in yaml.safe_load_all(path.read_text()) if doc is not None]


def base_resources() -> list[dict[str, Any]]:
    """The resources the kustomization lists, each file checked to exist and parse."""
    kustomization = documents(BASE / "kustomization.yaml")[0]
    found = []
    for name in kustomization["resources"]:
        path = BASE / name
        assert path.is_file(), f"kustomization.yaml lists {name}, which does not exist"
        found += documents(path)
    return found


def by_kind(resources: list[dict[str, Any]]) -> dict[str, list[dict[str, Any]]]:
    kinds: dict[str, list[dict[str, Any]]] = {}
    for resource in resources:
        kinds.setdefault(resource["kind"], []).append(resource)
    return kinds


def flag(args: list[str], name: str) -> str:
    (value,) = [a.split("=", 1)[1] for a in args if a.startswith(f"--{name}=")]
    return value


def test_yaml_files_pass_yamllint() -> None:
    config = YamlLintConfig(file=str(DEPLOY / ".yamllint.yaml"))
    files = sorted(DEPLOY.rglob("*.yaml"))
    assert len(files) >= 8
    problems = [f"{path.relative_to(ROOT)}:{p.line}: {p.desc}" for path in files
                for p in linter.run(path.read_text(), config, str(path))]
    assert problems == []


@pytest.mark.parametrize("version", K8S_VERSIONS)
def test_kubernetes_kinds_match_their_schemas(version: str) -> None:
    resources = base_resources()
    assert sorted(r["kind"] for r in resources) == [
        "Deployment", "HorizontalPodAutoscaler", "PodDisruptionBudget", "Service", "Service", "Service"]
    for resource in resources:
        kubernetes_validate.validate(resource, version, strict=True)  # raises on an unknown or wrong field


def test_strict_validation_catches_a_misspelt_field() -> None:
    """The check above is not vacuous: a field the schema does not define is refused."""
    deployment = by_kind(base_resources())["Deployment"][0]
    deployment["spec"]["template"]["spec"]["containers"][0]["readinessProbes"] = {}
    with pytest.raises(kubernetes_validate.ValidationError, match="readinessProbes"):
        kubernetes_validate.validate(deployment, K8S_VERSIONS[0], strict=True)


def test_kubectl_kustomize_builds_the_base() -> None:
    kubectl = shutil.which("kubectl")
    if kubectl is None:
        pytest.skip("kubectl is not on PATH: `kubectl kustomize` not run (the files it lists were checked above)")
    built = subprocess.run([kubectl, "kustomize", str(BASE)], capture_output=True, text=True, timeout=60)
    assert built.returncode == 0, built.stderr
    resources = [doc for doc in yaml.safe_load_all(built.stdout) if doc]
    assert sorted(r["kind"] for r in resources) == sorted(r["kind"] for r in base_resources())
    for resource in resources:  # the common label is on every object and in every selector
        kubernetes_validate.validate(resource, K8S_VERSIONS[0], strict=True)
        assert resource["metadata"]["labels"]["app.kubernetes.io/name"] == "dropin"
    kinds = by_kind(resources)
    pod_labels = kinds["Deployment"][0]["spec"]["template"]["metadata"]["labels"]
    for service in kinds["Service"]:
        assert service["spec"]["selector"].items() <= pod_labels.items()
    assert kinds["PodDisruptionBudget"][0]["spec"]["selector"]["matchLabels"].items() <= pod_labels.items()


def test_the_deployment_probes_ports_services_and_drain_agree() -> None:
    kinds = by_kind(base_resources())
    deployment = kinds["Deployment"][0]
    pod = deployment["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    args = container["args"]
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert ports == {"grpc": int(flag(args, "port")), "http": int(flag(args, "rest_port"))}
    for probe, path in (("startupProbe", "/v2/health/ready"), ("readinessProbe", "/v2/health/ready"),
                        ("livenessProbe", "/v2/health/live")):
        assert container[probe]["httpGet"] == {"path": path, "port": "http"}, probe
    assert "--metrics_enable" in args
    annotations = deployment["spec"]["template"]["metadata"]["annotations"]
    assert (int(annotations["prometheus.io/port"]), annotations["prometheus.io/path"]) == (ports["http"], "/metrics")
    # SIGKILL comes only after the delay (not ready, serving) and the drain of requests in flight
    drain = float(flag(args, "shutdown_delay_seconds")) + float(flag(args, "shutdown_grace_seconds"))
    assert pod["terminationGracePeriodSeconds"] >= drain + KILL_MARGIN
    # a read-only root file system, with TMPDIR (the models' private copies) on an emptyDir
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    assert pod["securityContext"]["runAsNonRoot"] is True
    tmpdir = {e["name"]: e["value"] for e in container["env"]}["TMPDIR"]
    mounts = {m["mountPath"]: m["name"] for m in container["volumeMounts"]}
    assert "emptyDir" in {v["name"]: v for v in pod["volumes"]}[mounts[tmpdir]]
    for service in kinds["Service"]:
        for port in service["spec"]["ports"]:
            assert port["targetPort"] in ports and port["port"] == ports[port["targetPort"]], service
    assert any(s["spec"].get("clusterIP") == "None" for s in kinds["Service"])  # for client-side round robin
    hpa = kinds["HorizontalPodAutoscaler"][0]["spec"]
    assert hpa["scaleTargetRef"] == {"apiVersion": "apps/v1", "kind": "Deployment", "name": "dropin"}
    pod_metrics = [m["pods"]["metric"]["name"] for m in hpa["metrics"] if m["type"] == "Pods"]
    assert pod_metrics == ["ovms_current_requests"]  # a family dropin's /metrics exposes


def kserve_errors(resource: dict[str, Any]) -> list[str]:
    """What is wrong with a KServe object: its own fields against the SDK's schema, the
    Kubernetes types inside it (containers, volumes) with kubernetes-validate, in a Pod."""
    kind = {"ClusterServingRuntime": "V1alpha1ClusterServingRuntime", "ServingRuntime": "V1alpha1ServingRuntime",
            "InferenceService": "V1beta1InferenceService"}[resource["kind"]]
    schema = {**KSERVE_SCHEMA, "$ref": f"#/definitions/{kind}"}
    errors = [f"{'/'.join(map(str, e.absolute_path))}: {e.message}"
              for e in jsonschema.Draft7Validator(schema).iter_errors(resource)]
    spec = resource["spec"]
    pod_parts = spec if "containers" in spec else spec["predictor"]
    pod = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "check"},
           "spec": {"containers": pod_parts.get("containers", [{"name": "check", "image": "check"}]),
                    "volumes": pod_parts.get("volumes", [])}}
    try:
        kubernetes_validate.validate(pod, K8S_VERSIONS[0], strict=True)
    except kubernetes_validate.ValidationError as exc:
        errors.append(str(exc))
    return errors


def test_the_serving_runtime_takes_over_kserve_openvino() -> None:
    (runtime,) = documents(KSERVE / "servingruntime.yaml")
    assert kserve_errors(runtime) == []
    spec = runtime["spec"]
    # kserve-openvino's command line, ports and Prometheus annotations
    (container,) = spec["containers"]
    args = container["args"]
    assert args[:5] == ["--model_name={{.Name}}", "--model_path=/mnt/models", "--port=9000", "--rest_port=8080",
                        "--file_system_poll_wait_seconds=0"]
    assert spec["annotations"] == {"prometheus.kserve.io/port": "8080", "prometheus.kserve.io/path": "/metrics"}
    assert "--metrics_enable" in args
    # its model formats, but for LLMs (huggingface), which dropin does not serve
    formats = {(f["name"], f["version"]) for f in spec["supportedModelFormats"]}
    assert formats == {("openvino", "10"), ("onnx", "1"), ("tensorflow", "1")}
    # only TF Serving's protocol, which dropin serves (REST and gRPC), not KServe's v2
    assert spec["protocolVersions"] == ["v1", "grpc-v1"]
    # within the pod's default 30 s between SIGTERM and SIGKILL
    assert float(flag(args, "shutdown_delay_seconds")) + float(flag(args, "shutdown_grace_seconds")) <= 30 - KILL_MARGIN
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    assert {m["mountPath"] for m in container["volumeMounts"]} == {"/tmp"}


def test_the_inference_service_serves_from_s3_with_this_runtime() -> None:
    (runtime,) = documents(KSERVE / "servingruntime.yaml")
    (service,) = documents(KSERVE / "inferenceservice.yaml")
    assert kserve_errors(service) == []
    secret, account = documents(KSERVE / "s3-credentials.yaml")
    for resource in (secret, account):
        kubernetes_validate.validate(resource, K8S_VERSIONS[0], strict=True)
    assert service["spec"]["predictor"]["serviceAccountName"] == account["metadata"]["name"]
    assert account["secrets"] == [{"name": secret["metadata"]["name"]}]
    assert set(secret["stringData"]) == {"AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"}
    model = service["spec"]["predictor"]["model"]
    assert re.fullmatch(r"s3://[a-z0-9.-]+/.+", model["storageUri"])
    assert model["runtime"] == runtime["metadata"]["name"]
    assert model["protocolVersion"] in runtime["spec"]["protocolVersions"]
    assert model["modelFormat"]["name"] in {f["name"] for f in runtime["spec"]["supportedModelFormats"]}


def test_the_kserve_check_catches_what_kserve_would_refuse() -> None:
    """The schema check is not vacuous: an unknown field, a protocol KServe does not know and a
    misspelt container field are each reported."""
    (runtime,) = documents(KSERVE / "servingruntime.yaml")
    runtime["spec"]["protocolVersion"] = ["v1"]
    runtime["spec"]["protocolVersions"] = ["v1", "grpc-v3"]
    runtime["spec"]["containers"][0]["arg"] = []
    errors = "\n".join(kserve_errors(runtime))
    assert "'protocolVersion' was unexpected" in errors
    assert "'grpc-v3' is not one of" in errors
    assert "arg" in errors


def test_the_dockerfile_builds_a_non_root_image_that_writes_only_to_tmpdir() -> None:
    commands = dockerfile.parse_file(str(DEPLOY / "Dockerfile"))
    final = commands[max(i for i, c in enumerate(commands) if c.cmd == "FROM"):]
    by_cmd: dict[str, list[tuple[str, ...]]] = {}
    for command in final:
        by_cmd.setdefault(command.cmd, []).append(command.value)
    assert by_cmd["USER"] == [("5000:5000",)]  # the uid the Deployment and the KServe runtime run as
    env = dict(zip(by_cmd["ENV"][0][::2], by_cmd["ENV"][0][1::2], strict=True))
    assert (env["TMPDIR"], env["PYTHONDONTWRITEBYTECODE"]) == ("/tmp", "1")
    assert by_cmd["ENTRYPOINT"] == [("dropin",)]
    assert by_cmd["EXPOSE"] == [("9000", "8080")]
    # what the build copies exists, and the default plugins are directories of plugins/
    for command in commands:
        if command.cmd == "COPY" and not command.flags:
            for source in command.value[:-1]:
                assert (ROOT / source).exists(), source
    (plugins,) = [c.value[0].split("=", 1)[1].strip('"').split() for c in commands
                  if c.cmd == "ARG" and c.value[0].startswith("PLUGINS=")]
    assert plugins and all((ROOT / "plugins" / name / "pyproject.toml").is_file() for name in plugins)
    deployment = by_kind(base_resources())["Deployment"][0]["spec"]["template"]["spec"]
    assert deployment["securityContext"]["runAsUser"] == 5000
    (runtime,) = documents(KSERVE / "servingruntime.yaml")
    assert runtime["spec"]["containers"][0]["securityContext"]["runAsUser"] == 5000
