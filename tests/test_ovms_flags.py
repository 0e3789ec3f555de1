"""End to end: every flag of OVMS 2026.2's `ovms --help` starts the real server, in both
`--flag value` and `--flag=value` forms; flags without a meaning in dropin log one warning each;
CORS answers preflight requests and sets its headers on REST answers; --grpc_channel_arguments
reaches the gRPC server (max connection age: the client sees GOAWAY and reconnects); the KServe
runtime's and ModelMesh's command lines start and serve as written."""

from __future__ import annotations

import http.client
import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from dropin.testing import numpy_models as modelgen
from dropin.testing.client import GrpcClient, RestClient
from dropin.testing.server import DropinServer, free_port

X = np.array([[1.0, 2.0]], np.float32)

#: OVMS 2026.2's flags (its cli_parser.cpp) with a valid value each, but the single-model and
#: config flags every test gives anyway (--model_name, --model_path, --config_path, --port,
#: --rest_port) and the OpenVINO plugin's (--cache_dir, --cpu_extension: its own tests).
#: None: a boolean flag given alone.
OVMS_FLAGS: dict[str, str | None] = {
    "grpc_bind_address": "127.0.0.1",
    "rest_bind_address": "127.0.0.1",
    "grpc_workers": "1",
    "grpc_max_threads": "8",
    "grpc_memory_quota": "2147483648",
    "rest_workers": "3",
    "log_level": "INFO",
    "grpc_channel_arguments": "grpc.max_connection_age_ms=600000,grpc.http2.max_pings_without_data=0",
    "file_system_poll_wait_seconds": "1",
    "sequence_cleaner_poll_wait_minutes": "5",
    "custom_node_resources_cleaner_interval_seconds": "300",
    "metrics_enable": "true",
    "metrics_list": "ovms_requests_success,ovms_infer_req_queue_size,ovms_infer_req_active",
    "allow_credentials": "false",
    "allowed_origins": "*",
    "allowed_methods": "*",
    "allowed_headers": "*",
    "allowed_local_media_path": "/tmp",
    "trace_path": "trace.json",
    "layout": "NC",
    "model_version_policy": '{"latest": {"num_versions": 1}}',
    "nireq": "2",
    "target_device": "CPU",
    "plugin_config": '{"delay_seconds": 0}',  # the numpy backend's; OpenVINO's in its tests
    "stateful": "false",  # given alone (true) in test_stateful.py: the model would then need sequence ids
    "idle_sequence_cleanup": "true",
    "low_latency_transformation": "false",
    "max_sequence_number": "500",
    "precision": "FP32",
    "mean": "0",
    "scale": "1",
    "color_format": "BGR",
    "list_models": "false",
    "overwrite_models": "false",
    "weight-format": "int8",
}
#: flags given by the other tests below, by the OpenVINO plugin's tests (the plugin's own flags,
#: and the reshaping ones, which the numpy backend refuses), or with a test of their own
#: (--log_path), so that the walk can say it covered every flag
GIVEN_ELSEWHERE = {"port", "rest_port", "model_name", "model_path", "config_path", "log_path", "shape", "batch_size",
                   "cache_dir", "cpu_extension", "add_to_config", "remove_from_config",
                   "model_repository_path", "pull", "source_model", "gguf_filename", "task",
                   "extra_quantization_params"}
#: OVMS 2026.2's `ovms --help`, every flag (cli_parser.cpp)
OVMS_HELP = {
    "port", "grpc_bind_address", "rest_port", "rest_bind_address", "grpc_workers", "grpc_max_threads",
    "grpc_memory_quota", "rest_workers", "log_level", "log_path", "trace_path", "grpc_channel_arguments",
    "file_system_poll_wait_seconds", "sequence_cleaner_poll_wait_minutes",
    "custom_node_resources_cleaner_interval_seconds", "cache_dir", "metrics_enable", "metrics_list", "cpu_extension",
    "allowed_local_media_path", "allow_credentials", "allowed_origins", "allowed_methods", "allowed_headers",
    "config_path", "list_models", "add_to_config", "remove_from_config", "pull", "source_model", "gguf_filename",
    "overwrite_models", "model_repository_path", "task", "weight-format", "extra_quantization_params", "model_name",
    "model_path", "batch_size", "shape", "layout", "model_version_policy", "nireq", "target_device", "plugin_config",
    "stateful", "idle_sequence_cleanup", "low_latency_transformation", "max_sequence_number", "mean", "scale",
    "color_format", "precision",
}
#: the flags above that mean nothing in dropin: each logs one warning
WARNED = {"grpc_memory_quota", "custom_node_resources_cleaner_interval_seconds", "trace_path",
          "allowed_local_media_path", "precision", "list_models", "overwrite_models", "weight-format"}


@pytest.fixture
def model(tmp_path: Path) -> Path:
    modelgen.scale_model(tmp_path / "m" / "1", shape=(-1, 2), factor=2.0)
    return tmp_path / "m"


def _args(equals: bool) -> list[str]:
    args: list[str] = []
    for flag, value in OVMS_FLAGS.items():
        if value is None:
            args.append(f"--{flag}")
        elif equals:
            args.append(f"--{flag}={value}")
        else:
            args += [f"--{flag}", value]
    return args


def test_the_walk_covers_every_ovms_flag() -> None:
    assert set(OVMS_FLAGS) | GIVEN_ELSEWHERE == OVMS_HELP


@pytest.mark.parametrize("equals", [False, True], ids=["flag value", "flag=value"])
def test_every_ovms_flag_starts_the_server_and_serves(model: Path, equals: bool) -> None:
    rest = free_port()
    serving = ["--model_name", "m", "--model_path", str(model), "--rest_port", str(rest)]
    if equals:
        serving = ["--model_name=m", f"--model_path={model}", f"--rest_port={rest}"]
    with DropinServer([*serving, *_args(equals)], start_timeout=60) as server:
        server.wait_for("m", 1, timeout=20)
        np.testing.assert_allclose(server.client.predict("m", {"x": X})["y"], X * 2)
        server.wait_for_log(rf"REST server listening on 127.0.0.1:{rest}$")
        np.testing.assert_allclose(RestClient(f"http://127.0.0.1:{rest}").predict("m", {"x": X})["y"], X * 2)
        server.wait_for_log("REST: 3 threads decode and encode JSON bodies")
        server.wait_for_log(r"gRPC: 8 threads serve calls \(--grpc_max_threads\)")
        log = server.log
    for flag in WARNED:
        lines = [line for line in log.splitlines() if f"--{flag} " in line and "WARNING" in line]
        assert len(lines) == 1, (flag, log)
        assert "accepted for OVMS compatibility and ignored" in lines[0]
    warned = {m.group(1) for m in re.finditer(r"WARNING\]\[dropin\] --([\w-]+) .*accepted for OVMS", log)}
    assert warned == WARNED


def test_ovms_config_management_and_pull_flags_start_the_server(model: Path) -> None:
    args = ["--model_name", "m", "--model_path", str(model), "--add_to_config", "/tmp/c", "--remove_from_config",
            "/tmp/c", "--model_repository_path", "/tmp/r", "--pull=false", "--source_model", "OpenVINO/x",
            "--gguf_filename", "x.gguf", "--task", "text_generation", "--extra_quantization_params", "sym"]
    with DropinServer(args) as server:
        server.wait_for("m", 1, timeout=20)
        np.testing.assert_allclose(server.client.predict("m", {"x": X})["y"], X * 2)
    for flag in ("add_to_config", "remove_from_config", "model_repository_path", "pull", "source_model",
                 "gguf_filename", "task", "extra_quantization_params"):
        assert len(re.findall(rf"WARNING\]\[dropin\] --{flag} ", server.log)) == 1, (flag, server.log)


def _request(port: int, method: str, path: str, headers: dict[str, str], body: bytes | None = None) \
        -> http.client.HTTPResponse:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    conn.request(method, path, body=body, headers=headers)
    response = conn.getresponse()
    response.read()
    conn.close()
    return response


def test_cors_defaults_answer_preflight_and_set_headers(model: Path) -> None:
    with DropinServer(["--model_name", "m", "--model_path", str(model), "--rest_port", str(free_port())]) as server:
        server.wait_for("m", 1, timeout=20)
        preflight = _request(server.rest_port, "OPTIONS", "/v1/models/m:predict", {
            "Origin": "https://app.example", "Access-Control-Request-Method": "POST",
            "Access-Control-Request-Headers": "content-type"})
        assert preflight.status == 204
        assert preflight.getheader("Access-Control-Allow-Origin") == "*"
        assert preflight.getheader("Access-Control-Allow-Methods") == "POST"
        assert preflight.getheader("Access-Control-Allow-Headers") == "content-type"
        assert preflight.getheader("Access-Control-Allow-Credentials") is None
        body = json.dumps({"instances": [[1.0, 2.0]]}).encode()
        answer = _request(server.rest_port, "POST", "/v1/models/m:predict", {"Origin": "https://app.example"}, body)
        assert answer.status == 200
        assert answer.getheader("Access-Control-Allow-Origin") == "*"
        error = _request(server.rest_port, "GET", "/v1/models/nope", {"Origin": "https://app.example"})
        assert error.status == 404 and error.getheader("Access-Control-Allow-Origin") == "*"


def test_cors_flags_restrict_origins_methods_headers_and_allow_credentials(model: Path) -> None:
    args = ["--model_name", "m", "--model_path", str(model), "--rest_port", str(free_port()),
            "--allowed_origins=https://a.example,https://b.example", "--allowed_methods", "GET,POST",
            "--allowed_headers", "content-type,authorization", "--allow_credentials"]
    with DropinServer(args) as server:
        server.wait_for("m", 1, timeout=20)
        asked = {"Origin": "https://b.example", "Access-Control-Request-Method": "POST"}
        preflight = _request(server.rest_port, "OPTIONS", "/v1/models/m:predict", asked)
        assert preflight.status == 204
        assert preflight.getheader("Access-Control-Allow-Origin") == "https://b.example"
        assert preflight.getheader("Access-Control-Allow-Methods") == "GET,POST"
        assert preflight.getheader("Access-Control-Allow-Headers") == "content-type,authorization"
        assert preflight.getheader("Access-Control-Allow-Credentials") == "true"
        refused = _request(server.rest_port, "OPTIONS", "/v1/models/m:predict",
                           {**asked, "Origin": "https://evil.example"})
        assert refused.status == 403 and refused.getheader("Access-Control-Allow-Origin") is None
        answer = _request(server.rest_port, "GET", "/v1/models/m", {"Origin": "https://a.example"})
        assert answer.status == 200 and answer.getheader("Access-Control-Allow-Origin") == "https://a.example"
        other = _request(server.rest_port, "GET", "/v1/models/m", {"Origin": "https://evil.example"})
        assert other.status == 200 and other.getheader("Access-Control-Allow-Origin") is None


def test_grpc_channel_arguments_max_connection_age_sends_goaway_and_clients_reconnect(model: Path) -> None:
    args = ["--model_name", "m", "--model_path", str(model),
            "--grpc_channel_arguments", "grpc.max_connection_age_ms=300,grpc.max_connection_age_grace_ms=200"]
    with DropinServer(args) as server:
        server.wait_for("m", 1, timeout=20)
        # a tracer on the client sees the connection's GOAWAY; the channel reconnects by itself
        env = {**os.environ, "GRPC_TRACE": "http", "GRPC_VERBOSITY": "debug"}
        code = (
            "import sys, time, numpy as np\n"
            "from dropin.testing.client import GrpcClient\n"
            f"c = GrpcClient('127.0.0.1:{server.port}')\n"
            "for _ in range(20):\n"
            "    assert c.predict('m', {'x': np.ones((1, 2), np.float32)})['y'].tolist() == [[2.0, 2.0]]\n"
            "    time.sleep(0.1)\n"
            "print('served 20')\n"
        )
        out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=60)
    assert out.returncode == 0 and "served 20" in out.stdout, out.stdout + out.stderr[-3000:]
    assert "GOAWAY" in out.stderr, out.stderr[-3000:]


def test_grpc_channel_arguments_that_are_not_key_value_are_refused(model: Path) -> None:
    out = subprocess.run([sys.executable, "-m", "dropin", "--model_name", "m", "--model_path", str(model),
                          "--grpc_channel_arguments", "grpc.max_connection_age_ms"],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 2
    assert "--grpc_channel_arguments: expected key=value, got 'grpc.max_connection_age_ms'" in out.stderr


def _wait_listening(proc: subprocess.Popen[str], port: int, timeout: float = 60) -> GrpcClient:
    client = GrpcClient(f"127.0.0.1:{port}")
    deadline = time.monotonic() + timeout
    while True:
        assert proc.poll() is None, proc.communicate()[1]
        try:
            client.wait_for("m", 1, timeout=1)
            return client
        except Exception:
            assert time.monotonic() < deadline, "the server did not serve in time"


def test_kserve_runtime_command_line_as_written(model: Path) -> None:
    grpc_port, rest_port = free_port(), free_port()
    # the KServe OpenVINO runtime's args, with free ports instead of 9000 and 8080
    argv = ["--model_name=m", f"--model_path={model}", f"--port={grpc_port}", f"--rest_port={rest_port}",
            "--file_system_poll_wait_seconds=0"]
    proc = subprocess.Popen([sys.executable, "-m", "dropin", *argv], stderr=subprocess.PIPE, text=True)
    try:
        client = _wait_listening(proc, grpc_port)
        np.testing.assert_allclose(client.predict("m", {"x": X})["y"], X * 2)
        np.testing.assert_allclose(RestClient(f"http://127.0.0.1:{rest_port}").predict("m", {"x": X})["y"], X * 2)
        client.close()
    finally:
        proc.terminate()
        proc.wait(30)


def test_modelmesh_command_line_and_config_reload(tmp_path: Path, model: Path) -> None:
    config = tmp_path / "model_config_list.json"
    config.write_text(json.dumps({"model_config_list": []}))  # what the adapter starts with
    grpc_port, rest_port = free_port(), free_port()
    # ModelMesh's OVMS ServingRuntime args, with free ports instead of 8001 and 8888
    argv = [f"--port={grpc_port}", f"--rest_port={rest_port}", f"--config_path={config}",
            "--file_system_poll_wait_seconds=0", "--grpc_bind_address=127.0.0.1", "--rest_bind_address=127.0.0.1"]
    proc = subprocess.Popen([sys.executable, "-m", "dropin", *argv], stderr=subprocess.PIPE, text=True)
    try:
        rest = RestClient(f"http://127.0.0.1:{rest_port}")
        deadline = time.monotonic() + 60
        while True:
            assert proc.poll() is None, proc.communicate()[1]
            try:
                if rest.request("GET", "/v1/config")[0] == 200:
                    break
            except OSError:
                pass
            assert time.monotonic() < deadline
            time.sleep(0.1)
        config.write_text(json.dumps({"model_config_list": [{"config": {"name": "m", "base_path": str(model)}}]}))
        status, _ = rest.request("POST", "/v1/config/reload")
        assert status == 201
        client = _wait_listening(proc, grpc_port)
        np.testing.assert_allclose(client.predict("m", {"x": X})["y"], X * 2)
        client.close()
    finally:
        proc.terminate()
        proc.wait(30)


def test_a_flag_without_meaning_warns_once_with_workers(model: Path) -> None:
    with DropinServer(["--model_name", "m", "--model_path", str(model), "--workers", "2", "--precision", "FP32"]) \
            as server:
        server.wait_for("m", 1, timeout=30)
        server.wait_for_log(r"\[worker 2\].*initial model loading finished")
        np.testing.assert_allclose(server.client.predict("m", {"x": X})["y"], X * 2)
        log = server.log
    assert log.count("--precision FP32: accepted for OVMS compatibility and ignored") == 1, log
