"""A missing bucket, an endpoint that is down and credentials S3 refuses show in the model's status
with the reason, while every other model serves and loaded versions keep serving."""

from __future__ import annotations

import json
import time
from pathlib import Path

import grpc
import numpy as np
import pytest

from dropin.testing.server import DropinServer, free_port
from dropin_openvino.modelgen import F32_CONFIG, run_openvino, scale_model
from dropin_s3.testing import S3Server, s3_env

X = np.arange(12, dtype=np.float32).reshape(1, 3, 4)


def _not_found(server: DropinServer, name: str) -> str:
    """The model's status over gRPC and REST, which must both be NOT_FOUND: the details."""
    with pytest.raises(grpc.RpcError) as caught:
        server.client.status_response(name)
    assert caught.value.code() == grpc.StatusCode.NOT_FOUND
    assert server.rest is not None
    status, body = server.rest.request("GET", f"/v1/models/{name}")
    assert status == 404 and body["error"] == caught.value.details()
    return str(caught.value.details())


def _serves(server: DropinServer, name: str, version_dir: Path) -> None:
    np.testing.assert_array_equal(server.client.predict(name, {"x": X})["y"], run_openvino(version_dir, {"x": X})["y"])


def test_missing_bucket_and_endpoint_down_show_in_status_while_the_rest_serves(  # type: ignore[no-untyped-def]
    s3: S3Server, dropin_server, tmp_path: Path
) -> None:
    flaky = S3Server()  # a second endpoint on the same S3 data, stopped and started again below
    bucket = s3.bucket()
    model = scale_model(tmp_path / "local" / "1", factor=4.0)
    s3.upload(bucket, "good/1", model)
    s3.upload(bucket, "flaky/1", model)
    closed = free_port()
    config = tmp_path / "config.json"
    config.write_text(json.dumps({"model_config_list": [{"config": c} for c in [
        {"name": "good", "base_path": f"s3://127.0.0.1:{s3.port}/{bucket}/good"},
        {"name": "flaky", "base_path": f"s3://127.0.0.1:{flaky.port}/{bucket}/flaky"},
        {"name": "nobucket", "base_path": f"s3://127.0.0.1:{s3.port}/no-such-bucket/m"},
        {"name": "down", "base_path": f"s3://127.0.0.1:{closed}/{bucket}/good"},
        {"name": "local", "base_path": str(model.parent)},
    ]]}))
    server = dropin_server(
        "--config_path", str(config), "--rest_port", str(free_port()), "--plugin_config", F32_CONFIG,
        "--s3_cache_dir", str(tmp_path / "cache"), env=s3_env(),
    )
    try:
        for name in ("good", "flaky", "local"):
            server.wait_for(name, 1)
        server.wait_for_log("model nobucket: cannot list versions")
        server.wait_for_log("model down: cannot list versions")
        assert _not_found(server, "nobucket") == (
            "Model with requested version is not found - cannot list versions in "
            f"s3://127.0.0.1:{s3.port}/no-such-bucket/m: bucket 'no-such-bucket' does not exist "
            f"(s3://127.0.0.1:{s3.port}/no-such-bucket/m/)"
        )
        down = _not_found(server, "down")
        assert f"cannot list versions in s3://127.0.0.1:{closed}/{bucket}/good: cannot reach S3" in down
        assert f"Could not connect to the endpoint URL: \"http://127.0.0.1:{closed}/{bucket}" in down
        for name in ("good", "flaky", "local"):
            _serves(server, name, model)

        flaky.stop()  # the endpoint goes down under a loaded version: it keeps serving, and says why
        server.client.wait_for("flaky", 1)
        note = f"cannot list versions in s3://127.0.0.1:{flaky.port}/{bucket}/flaky: cannot reach S3"
        deadline = time.monotonic() + 15
        while True:
            (state, code, message), = server.client.status("flaky").values()
            if note in message or time.monotonic() > deadline:
                break
            time.sleep(0.05)
        assert (state, code) == ("AVAILABLE", 0) and message.startswith(f"OK ({note}")
        assert message.endswith("; serving the files loaded before)")
        for name in ("flaky", "good", "local"):
            _serves(server, name, model)
        assert server.rest is not None and server.rest.status("flaky")[1][0] == "AVAILABLE"

        flaky = S3Server(flaky.port)  # back: the status is plain OK again
        server.wait_for_log("model flaky: s3://.* is readable again", timeout=15)
        assert server.client.status("flaky") == {1: ("AVAILABLE", 0, "OK")}
    finally:
        flaky.stop()


def test_refused_credentials_show_in_status_while_the_rest_serves(  # type: ignore[no-untyped-def]
    s3: S3Server, dropin_server, tmp_path: Path
) -> None:
    bucket = s3.bucket()
    model = scale_model(tmp_path / "local" / "1", factor=6.0)
    s3.upload(bucket, "m/1", model)
    s3.denied_keys.add("AKIAREFUSED")
    config = tmp_path / "config.json"
    config.write_text(json.dumps({"model_config_list": [
        {"config": {"name": "m", "base_path": f"s3://{bucket}/m"}},
        {"config": {"name": "local", "base_path": str(model.parent)}},
    ]}))
    server = dropin_server(
        "--config_path", str(config), "--rest_port", str(free_port()), "--plugin_config", F32_CONFIG,
        "--s3_cache_dir", str(tmp_path / "cache"), env=s3_env(S3_ENDPOINT=s3.url, AWS_ACCESS_KEY_ID="AKIAREFUSED"),
    )
    server.wait_for("local", 1)
    server.wait_for_log("model m: cannot list versions")
    assert _not_found(server, "m") == (
        f"Model with requested version is not found - cannot list versions in s3://{bucket}/m: access to "
        f"s3://{bucket}/m/ denied: InvalidAccessKeyId: "
        "The AWS Access Key Id you provided does not exist in our records."
    )
    _serves(server, "local", model)
    assert server.log.count("model m: cannot list versions") == 1  # said once, not at every poll


def test_https_endpoint_in_the_path_checks_certificates_unless_s3_verify_ssl_is_0(  # type: ignore[no-untyped-def]
    dropin_server, tmp_path: Path
) -> None:
    secure = S3Server(https=True)  # a self-signed certificate, as a private MinIO often has
    try:
        bucket = secure.bucket()
        model = scale_model(tmp_path / "model", factor=8.0)
        secure.upload(bucket, "m/1", model)
        args = ("--model_name", "m", "--model_path", f"s3://127.0.0.1:{secure.port}/{bucket}/m",
                "--plugin_config", F32_CONFIG, "--s3_cache_dir", str(tmp_path / "cache"))
        env = s3_env()
        del env["S3_USE_HTTPS"]  # the host:port form is HTTPS by default, as in OVMS
        checked = dropin_server(*args, "--rest_port", str(free_port()), env=env)
        checked.wait_for_log("model m: cannot list versions")
        assert "certificate verify failed" in _not_found(checked, "m")
        unchecked = dropin_server(*args, "--rest_port", str(free_port()), env={**env, "S3_VERIFY_SSL": "0"})
        unchecked.wait_for("m", 1)
        _serves(unchecked, "m", model)
    finally:
        secure.stop()
