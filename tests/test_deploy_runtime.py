"""dropin started as the KServe runtime (deploy/kserve/servingruntime.yaml) starts it, in the
conditions of its container: exactly the runtime's command and arguments ({{.Name}} filled in,
the /mnt/models directory a temporary one), as uid 5000, on a read-only root file system with
TMPDIR on a tmpfs (the emptyDir), in a network namespace of its own (so that the manifest's
fixed ports 9000 and 8080 are free whatever else runs on this machine). The probe paths and
ports, and the Prometheus port and path the manifest declares, are called there.

The namespaces need root (`unshare`, `mount`, `setpriv`): the test runs this file as a script
inside them (`main` below), which prints what it saw as JSON for the test to check."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import numpy as np
import yaml

ROOT = Path(__file__).resolve().parents[1]
RUNTIME = ROOT / "deploy" / "kserve" / "servingruntime.yaml"
MODELS = "/tmp/mnt/models"  # inside the namespace: the storage initializer's /mnt/models
X = [[1.0, 2.0], [3.0, -4.0]]


def http_status(url: str) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=5) as reply:
            return reply.status, reply.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()
    except OSError:
        return 0, b""


def main(plan_path: str) -> None:
    """Inside `unshare --mount --net`: lay out the container's file systems, start dropin as the
    runtime says, call it, stop it; print the observations."""
    plan = json.loads(Path(plan_path).read_text())
    files = {rel: Path(plan["model_dir"], rel).read_bytes() for rel in plan["model_files"]}
    subprocess.run(["ip", "link", "set", "lo", "up"], check=True)
    kept = under_tmp()
    if kept:  # the real /tmp stays reachable at /mnt, to bind the checkout back over the tmpfs
        subprocess.run(["mount", "--bind", "/tmp", "/mnt"], check=True)
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=256m,mode=1777", "tmpfs", "/tmp"], check=True)  # emptyDir
    for path in kept:
        os.makedirs(path)
        subprocess.run(["mount", "--bind", "-o", "ro", "/mnt" + path.removeprefix("/tmp"), path], check=True)
    for rel, data in files.items():
        Path(MODELS, rel).parent.mkdir(parents=True, exist_ok=True)
        Path(MODELS, rel).write_bytes(data)
    subprocess.run(["mount", "--bind", "-o", "ro", MODELS, MODELS], check=True)
    subprocess.run(["mount", "-o", "remount,bind,ro", "/"], check=True)  # readOnlyRootFilesystem
    env = {"PATH": os.environ["PATH"], "HOME": "/tmp", **plan["env"]}
    server = subprocess.Popen(
        ["setpriv", "--reuid=5000", "--regid=5000", "--clear-groups", "--", *plan["command"]],
        env=env, stderr=subprocess.PIPE, text=True,
    )
    seen: dict[str, Any] = {}
    ready, live, metrics = (f"http://127.0.0.1:{port}{path}" for port, path in plan["http"])
    deadline = time.monotonic() + 60
    while http_status(ready)[0] != 200 and server.poll() is None and time.monotonic() < deadline:
        time.sleep(0.1)
    seen["ready"], seen["live"] = http_status(ready)[0], http_status(live)[0]
    if seen["ready"] == 200:
        seen.update(calls(plan, metrics))
        server.send_signal(signal.SIGTERM)
        time.sleep(0.5)  # within --shutdown_delay_seconds: not ready, still serving
        seen["ready_after_sigterm"] = http_status(ready)[0]
        seen["predict_after_sigterm"] = rest_predict(plan)
    else:
        server.kill()
    try:
        seen["exit"] = server.wait(60)
    except subprocess.TimeoutExpired:
        server.kill()
        seen["exit"] = "timeout"
    assert server.stderr is not None
    seen["log"] = server.stderr.read()
    seen["root_writable"] = os.access("/usr", os.W_OK)  # (the model loaded from its copy under TMPDIR)
    print(json.dumps(seen))


def under_tmp() -> list[str]:
    """The checkout and the venv this test runs from, when they are under /tmp (a CI clone): the
    tmpfs standing for the emptyDir would hide them, so they are bound back over it."""
    paths = {str(p) for p in (ROOT, Path(sys.prefix).resolve()) if str(p).startswith("/tmp/")}
    return sorted(p for p in paths if not any(p.startswith(q + "/") for q in paths))


def rest_predict(plan: dict[str, Any]) -> Any:
    body = json.dumps({"inputs": {"x": X}}).encode()
    url = f"http://127.0.0.1:{plan['rest_port']}/v1/models/{plan['name']}:predict"
    with urllib.request.urlopen(urllib.request.Request(url, body), timeout=10) as reply:
        return json.loads(reply.read())["outputs"]


def calls(plan: dict[str, Any], metrics_url: str) -> dict[str, Any]:
    import grpc
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    from dropin._proto.tensorflow_serving.apis.prediction_service_pb2_grpc import PredictionServiceStub
    from dropin.testing.client import outputs_of, predict_request

    with grpc.insecure_channel(f"127.0.0.1:{plan['grpc_port']}") as channel:
        health = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=10)
        request = predict_request(plan["name"], {"x": np.array(X, np.float32)})
        response = PredictionServiceStub(channel).Predict(request, timeout=10)
    status, body = http_status(metrics_url)
    return {
        "grpc_health": health_pb2.HealthCheckResponse.ServingStatus.Name(health.status),
        "grpc_predict": outputs_of(response)["y"].tolist(),
        "rest_predict": rest_predict(plan),
        "metrics": status,
        "metrics_has_requests": b"ovms_requests_success{" in body,
    }


# -- the test ----------------------------------------------------------------------------------


def runtime_plan(tmp_path: Path, model_dir: Path) -> dict[str, Any]:
    """What the ServingRuntime says: command and arguments (templated name filled in, the model
    directory moved), environment, and the ports and paths of its probes and metrics."""
    (runtime,) = [d for d in yaml.safe_load_all(RUNTIME.read_text()) if d]
    (container,) = runtime["spec"]["containers"]
    name = "digits"
    args = [a.replace("{{.Name}}", name).replace("/mnt/models", MODELS) for a in container["args"]]
    command = [str(Path(sys.executable).parent / container["command"][0]), *container["command"][1:]]
    flags = dict(a.lstrip("-").split("=", 1) for a in args if "=" in a)
    annotations = runtime["spec"]["annotations"]
    probe = {key: container[key]["httpGet"] for key in ("readinessProbe", "livenessProbe")}
    return {
        "command": [*command, *args],
        "env": {e["name"]: e["value"] for e in container["env"]},
        "name": name,
        "grpc_port": int(flags["port"]),
        "rest_port": int(flags["rest_port"]),
        "http": [(probe["readinessProbe"]["port"], probe["readinessProbe"]["path"]),
                 (probe["livenessProbe"]["port"], probe["livenessProbe"]["path"]),
                 (int(annotations["prometheus.kserve.io/port"]), annotations["prometheus.kserve.io/path"])],
        "model_dir": str(model_dir),
        "model_files": [str(p.relative_to(model_dir)) for p in model_dir.rglob("*") if p.is_file()],
    }


def test_dropin_serves_with_exactly_the_serving_runtimes_command_line(tmp_path: Path) -> None:
    from dropin.testing import numpy_models as modelgen

    missing = [tool for tool in ("unshare", "setpriv", "mount", "ip") if shutil.which(tool) is None]
    assert not missing and os.geteuid() == 0, f"needs root and {missing}: the container's conditions are namespaces"
    model_dir = tmp_path / "models"
    version = modelgen.scale_model(model_dir / "1", shape=(-1, 2), factor=3.0, offset=1.0)
    expected = modelgen.run_numpy(version, {"x": np.array(X, np.float32)})["y"].tolist()
    plan = runtime_plan(tmp_path, model_dir)
    assert plan["http"][:2] == [(8080, "/v2/health/ready"), (8080, "/v2/health/live")]
    assert (plan["grpc_port"], plan["rest_port"]) == (9000, 8080)  # kserve-openvino's
    (tmp_path / "plan.json").write_text(json.dumps(plan))
    run = subprocess.run(
        ["unshare", "--mount", "--net", "--propagation", "private", sys.executable, __file__, tmp_path / "plan.json"],
        capture_output=True, text=True, timeout=180,
    )
    assert run.returncode == 0, run.stderr
    seen = json.loads(run.stdout)
    log = seen.pop("log")
    assert (seen["ready"], seen["live"]) == (200, 200), log
    assert seen["grpc_health"] == "SERVING"
    assert seen["grpc_predict"] == expected and seen["rest_predict"] == expected
    assert (seen["metrics"], seen["metrics_has_requests"]) == (200, True)
    assert seen["root_writable"] is False
    # SIGTERM: readiness fails at once, requests are still served through --shutdown_delay_seconds
    assert seen["ready_after_sigterm"] == 503 and seen["predict_after_sigterm"] == expected
    assert seen["exit"] == 0, log
    assert "Traceback" not in log and "WARNING" not in log, log


if __name__ == "__main__":
    main(sys.argv[1])
