"""Graceful shutdown, message limits, TLS (with certificates made here) and plugin allow/block
lists, on a real server process."""

from __future__ import annotations

import datetime
import ipaddress
import json
import re
import signal
import ssl
import subprocess
import sys
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import grpc
import numpy as np
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from dropin._proto.tensorflow_serving.apis import model_management_pb2, prediction_service_pb2_grpc
from dropin.cli import build_parser, settings_from_args
from dropin.config import ConfigError
from dropin.testing import numpy_models as modelgen
from dropin.testing.client import GIB, outputs_of, predict_request
from dropin.testing.fake_plugins import SLOW_PLUGIN, install_fake_distribution
from dropin.testing.server import free_port

X = np.ones((1, 2), np.float32)

@pytest.fixture
def slow_repo(tmp_path: Path) -> tuple[Path, dict[str, str]]:
    site = tmp_path / "site"
    install_fake_distribution(site, "dropin_slow", {"slow": "slow_plugin"}, {"slow_plugin": SLOW_PLUGIN})
    repo = tmp_path / "m"
    (repo / "1").mkdir(parents=True)
    return repo, {"PYTHONPATH": str(site)}


def test_sigterm_finishes_requests_in_flight_and_exits_0(start_server, slow_repo) -> None:
    repo, env = slow_repo
    (repo / "1" / "slow.txt").write_text("1.0")
    server = start_server("--model_name", "m", "--model_path", str(repo), "--shutdown_grace_seconds", "10", env=env)
    server.wait_for("m", 1)
    with ThreadPoolExecutor(8) as pool:
        in_flight = [
            pool.submit(server.predict.Predict, predict_request("m", {"x": X * i}), timeout=30) for i in range(8)
        ]
        time.sleep(0.3)  # all eight are inside the model now
        server.proc.send_signal(signal.SIGTERM)
        time.sleep(0.2)
        with pytest.raises(grpc.RpcError) as info:  # new requests are refused ...
            server.predict.Predict(predict_request("m", {"x": X}), timeout=5)
        assert info.value.code() == grpc.StatusCode.UNAVAILABLE
        results = [f.result() for f in in_flight]  # ... while the accepted ones finish
    for i, response in enumerate(results):
        np.testing.assert_array_equal(outputs_of(response)["y"], X * i * 2)
    assert server.proc.wait(30) == 0
    server._reader.join(10)  # the log of an exited server is read to its end
    assert "shutting down: finishing requests in flight" in server.log and "stopped" in server.log


def test_shutdown_grace_bounds_the_wait(start_server, slow_repo) -> None:
    repo, env = slow_repo
    (repo / "1" / "slow.txt").write_text("30")
    server = start_server("--model_name", "m", "--model_path", str(repo), "--shutdown_grace_seconds", "0.5", env=env)
    server.wait_for("m", 1)
    with ThreadPoolExecutor(2) as pool:
        stuck = pool.submit(server.predict.Predict, predict_request("m", {"x": X}), timeout=60)
        time.sleep(0.3)
        started = time.monotonic()
        server.proc.send_signal(signal.SIGTERM)
        assert server.proc.wait(20) == 0
        assert time.monotonic() - started < 10
        with pytest.raises(grpc.RpcError):
            stuck.result()


def test_message_and_element_limits(start_server, repo: Path) -> None:
    modelgen.dynamic_model(repo / "1")
    server = start_server("--model_name", "m", "--model_path", str(repo),
                          "--grpc_max_message_size", "65536", "--max_elements", "1000")
    server.wait_for("m", 1)
    with pytest.raises(grpc.RpcError) as info:
        server.predict.Predict(predict_request("m", {"x": np.ones((100, 200), np.float32)}), timeout=10)
    assert info.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    with pytest.raises(grpc.RpcError) as info:
        server.predict.Predict(predict_request("m", {"x": np.ones((10, 101), np.float32)}), timeout=10)
    assert info.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert info.value.details().startswith("Request is too large - Expected at most 1000 elements")
    response = server.predict.Predict(predict_request("m", {"x": np.ones((10, 100), np.float32)}), timeout=10)
    assert outputs_of(response)["y"].shape == (10, 100)


# -- TLS --------------------------------------------------------------------------------------


def _cert(subject: str, key, issuer_name, issuer_key, ca: bool = False, server: bool = False) -> x509.Certificate:
    now = datetime.datetime.now(datetime.timezone.utc)
    builder = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)]))
        .issuer_name(issuer_name or x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)]))
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
    )
    if server:
        builder = builder.add_extension(
            x509.SubjectAlternativeName([x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
    return builder.sign(issuer_key or key, hashes.SHA256())


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("pki")
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca = _cert("dropin test CA", ca_key, None, None, ca=True)
    files: dict[str, Path] = {}

    def write(name: str, data: bytes) -> None:
        files[name] = root / name
        files[name].write_bytes(data)

    pem = serialization.Encoding.PEM
    write("ca.pem", ca.public_bytes(pem))
    for who, server in (("server", True), ("client", False)):
        key = ec.generate_private_key(ec.SECP256R1())
        cert = _cert(f"dropin test {who}", key, ca.subject, ca_key, server=server)
        write(f"{who}.pem", cert.public_bytes(pem))
        write(f"{who}.key", key.private_bytes(pem, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))
    return files


def _secure_stub(port: int, pki: dict[str, Path], client_cert: bool):
    credentials = grpc.ssl_channel_credentials(
        root_certificates=pki["ca.pem"].read_bytes(),
        private_key=pki["client.key"].read_bytes() if client_cert else None,
        certificate_chain=pki["client.pem"].read_bytes() if client_cert else None,
    )
    channel = grpc.secure_channel(f"localhost:{port}", credentials, options=[("grpc.max_receive_message_length", GIB)])
    return channel, prediction_service_pb2_grpc.PredictionServiceStub(channel)


def _https_status(port: int, pki: dict[str, Path], client_cert: bool) -> dict:
    context = ssl.create_default_context(cafile=str(pki["ca.pem"]))
    if client_cert:
        context.load_cert_chain(pki["client.pem"], pki["client.key"])
    with urllib.request.urlopen(f"https://localhost:{port}/v1/models/m", context=context, timeout=10) as reply:
        return json.loads(reply.read())


def test_tls_on_both_ports(start_server, repo: Path, pki: dict[str, Path]) -> None:
    modelgen.scale_model(repo / "1", shape=(-1, 2), factor=3.0)
    server = start_server("--model_name", "m", "--model_path", str(repo), "--rest_port", str(free_port()),
                          "--tls_cert", str(pki["server.pem"]), "--tls_key", str(pki["server.key"]))
    server.wait_for_log("TLS on every port; client certificates not required")
    channel, stub = _secure_stub(server.port, pki, client_cert=False)
    deadline = time.monotonic() + 30
    while True:
        try:
            response = stub.Predict(predict_request("m", {"x": X}), timeout=10)
            break
        except grpc.RpcError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)
    np.testing.assert_array_equal(outputs_of(response)["y"], X * 3)
    channel.close()
    with pytest.raises(grpc.RpcError) as info:  # a plaintext client gets nowhere
        server.predict.Predict(predict_request("m", {"x": X}), timeout=5)
    assert info.value.code() == grpc.StatusCode.UNAVAILABLE
    rest_port = server.rest_port
    assert _https_status(rest_port, pki, client_cert=False)["model_version_status"][0]["state"] == "AVAILABLE"


def test_mutual_tls_requires_a_client_certificate(start_server, repo: Path, pki: dict[str, Path]) -> None:
    modelgen.scale_model(repo / "1", shape=(-1, 2), factor=3.0)
    server = start_server("--model_name", "m", "--model_path", str(repo), "--rest_port", str(free_port()),
                          "--tls_cert", str(pki["server.pem"]), "--tls_key", str(pki["server.key"]),
                          "--tls_client_ca", str(pki["ca.pem"]))
    rest_port = server.rest_port
    channel, stub = _secure_stub(server.port, pki, client_cert=False)
    with pytest.raises(grpc.RpcError) as info:
        stub.Predict(predict_request("m", {"x": X}), timeout=5)
    assert info.value.code() == grpc.StatusCode.UNAVAILABLE
    channel.close()
    with pytest.raises((ssl.SSLError, urllib.error.URLError, ConnectionError)):
        _https_status(rest_port, pki, client_cert=False)
    channel, stub = _secure_stub(server.port, pki, client_cert=True)
    deadline = time.monotonic() + 30
    while True:
        try:
            stub.Predict(predict_request("m", {"x": X}), timeout=10)
            break
        except grpc.RpcError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)
    channel.close()
    assert _https_status(rest_port, pki, client_cert=True)["model_version_status"][0]["state"] == "AVAILABLE"


def test_unreadable_tls_files_stop_start_up(start_server, repo: Path, tmp_path: Path) -> None:
    modelgen.scale_model(repo / "1", shape=(-1, 2))
    with pytest.raises(RuntimeError, match="cannot read the TLS certificate"):
        start_server("--model_name", "m", "--model_path", str(repo),
                     "--tls_cert", str(tmp_path / "nope.pem"), "--tls_key", str(tmp_path / "nope.key"))


# -- which plugins load -----------------------------------------------------------------------


def _plugins(env: dict[str, str]) -> str:
    return subprocess.run([sys.executable, "-m", "dropin", "plugins"], capture_output=True, text=True, check=True,
                          env={"PATH": "/usr/bin:/bin", **env}).stdout


def test_allow_list_loads_only_the_named_plugins(tmp_path: Path) -> None:
    install_fake_distribution(tmp_path, "dropin_slow", {"slow": "slow_plugin"}, {"slow_plugin": SLOW_PLUGIN})
    out = _plugins({"DROPIN_ALLOW_PLUGINS": "numpy", "PYTHONPATH": str(tmp_path)})
    assert "slow (dropin_slow 1.0)\n  module: slow_plugin\n  error: blocked by DROPIN_ALLOW_PLUGINS\n" in out
    assert "backends: slow" not in out and "backends: numpy" in out
    assert "builtin (dropin" in out and "sources: local" in out  # the core's own plugin always loads


def test_a_model_whose_backend_plugin_is_blocked_stops_start_up(start_server, repo: Path) -> None:
    modelgen.scale_model(repo / "1", shape=(-1, 2))
    with pytest.raises(RuntimeError) as info:
        start_server("--model_name", "m", "--model_path", str(repo), "--backend", "numpy",
                     env={"DROPIN_BLOCK_PLUGINS": "numpy"})
    assert (
        "cannot start: Invalid configuration - model 'm' needs backend 'numpy', but its plugin is not usable: "
        "blocked by DROPIN_BLOCK_PLUGINS"
        in str(info.value)
    )


# -- HandleReloadConfigRequest: off unless the operator turns it on, then only inside named roots --


def _reload_request(*models: tuple[str, str]) -> model_management_pb2.ReloadConfigRequest:
    request = model_management_pb2.ReloadConfigRequest()
    for name, base_path in models:
        entry = request.config.model_config_list.config.add()
        entry.name, entry.base_path = name, base_path
    return request


def _assert_serving(server, names: dict[str, float]) -> None:  # type: ignore[no-untyped-def]
    """Each model answers Predict with its factor; "procfs" and models not named do not exist."""
    for name, factor in names.items():
        got = outputs_of(server.predict.Predict(predict_request(name, {"x": X}), timeout=20))["y"]
        np.testing.assert_array_equal(got, X * factor)
    with pytest.raises(grpc.RpcError) as info:
        server.client.status("procfs")
    assert info.value.code() == grpc.StatusCode.NOT_FOUND


def test_reload_config_request_changes_nothing_by_default(start_server, tmp_path: Path) -> None:
    modelgen.scale_model(tmp_path / "a" / "1", shape=(-1, 2), factor=2.0)
    config = tmp_path / "config.json"
    config.write_text(json.dumps({"model_config_list": [{"config": {"name": "a", "base_path": "a"}}]}))
    server = start_server("--config_path", str(config), "--rest_port", str(free_port()))
    server.wait_for("a", 1)
    response = server.models.HandleReloadConfigRequest(_reload_request(("procfs", "/proc")), timeout=30)
    assert not response.HasField("status")  # OVMS's answer: OK, an empty response, nothing changed
    server.wait_for_log(r"reload config request ignored: .*needs --reload_config_enable")
    _assert_serving(server, {"a": 2.0})
    # POST /v1/config/reload re-reads the operator's config.json only: nothing in the request points it elsewhere
    assert server.rest is not None
    for path, body in (
        ("/v1/config/reload", {"model_config_list": [{"config": {"name": "procfs", "base_path": "/proc"}}]}),
        ("/v1/config/reload?config_path=/proc&base_path=/proc", {"config_path": "/proc"}),
    ):
        status, answer = server.rest.request("POST", path, body)
        assert status == 200 and list(answer) == ["a"], answer
    _assert_serving(server, {"a": 2.0})


def test_reload_config_request_is_confined_to_the_named_roots(start_server, tmp_path: Path) -> None:
    tmp_path = tmp_path.resolve()  # the messages show resolved paths
    root = tmp_path / "root"
    modelgen.scale_model(root / "a" / "1", shape=(-1, 2), factor=2.0)
    modelgen.scale_model(root / "b" / "1", shape=(-1, 2), factor=3.0)
    modelgen.scale_model(tmp_path / "outside" / "1", shape=(-1, 2), factor=5.0)
    (root / "escape").symlink_to(tmp_path / "outside")
    (root / "b_link").symlink_to(root / "b")
    server = start_server("--model_name", "a", "--model_path", str(root / "a"),
                          "--reload_config_enable", "--reload_config_roots", str(root))
    server.wait_for("a", 1)
    # inside the root: applied, `..` and symlinks resolved first (both stay inside here)
    request = _reload_request(("a", str(root / "a")), ("b", f"{root}/a/../b_link"))
    assert server.models.HandleReloadConfigRequest(request, timeout=60).status.error_code == 0
    server.wait_for("b", 1)
    _assert_serving(server, {"a": 2.0, "b": 3.0})
    refused = {
        "/proc": f"model 'procfs': base_path /proc is outside --reload_config_roots ({root})",
        f"{root}/../outside": f"model 'procfs': base_path {root}/../outside (resolved: {tmp_path}/outside) is outside "
                              f"--reload_config_roots ({root})",
        str(root / "escape"): f"model 'procfs': base_path {root}/escape (resolved: {tmp_path}/outside) is outside "
                              f"--reload_config_roots ({root})",
    }
    for base_path, message in refused.items():
        with pytest.raises(grpc.RpcError) as info:  # the whole request, with the models inside the root too
            server.models.HandleReloadConfigRequest(
                _reload_request(("a", str(root / "a")), ("procfs", base_path)), timeout=30
            )
        assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert info.value.details() == f"Invalid configuration - {message}"
        _assert_serving(server, {"a": 2.0, "b": 3.0})  # nothing changed
    assert server.log.count("reload config request refused") == 3 and "Traceback" not in server.log


@pytest.mark.parametrize(
    "flags, message",
    [
        (["--reload_config_enable"], "--reload_config_enable needs --reload_config_roots"),
        (["--reload_config_roots", "/tmp"], "--reload_config_roots has no effect without --reload_config_enable"),
        (
            ["--reload_config_enable", "--reload_config_roots", "/no/such/dir"],
            "--reload_config_roots: '/no/such/dir' is not a directory",
        ),
    ],
)
def test_reload_config_flags_go_together(flags: list[str], message: str) -> None:
    args = build_parser().parse_args(["serve", "--model_name", "m", "--model_path", "/m", *flags])
    with pytest.raises(ConfigError, match=re.escape(message)):
        settings_from_args(args)
