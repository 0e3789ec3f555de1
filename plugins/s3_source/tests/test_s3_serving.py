"""A model served from S3: the same answers as OpenVINO run directly on the same files, over gRPC
and REST, for both spellings of an S3 base path (the endpoint from S3_ENDPOINT, and OVMS's
s3://host:port/bucket/prefix)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from dropin.testing.server import free_port
from dropin_openvino.modelgen import DIGITS, DIGITS_F32, F32_CONFIG, assert_same_digits, digit_images, run_openvino
from dropin_s3.testing import S3Server, s3_env


def test_model_from_s3_over_grpc_and_rest_matches_openvino(s3: S3Server, dropin_server, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    bucket = s3.bucket()
    s3.upload(bucket, "digits/1", DIGITS)
    server = dropin_server(
        "--model_name", "digits", "--model_path", f"s3://{bucket}/digits", "--rest_port", str(free_port()),
        "--plugin_config", F32_CONFIG, "--s3_cache_dir", str(tmp_path / "cache"),
        env=s3_env(S3_ENDPOINT=s3.url),
    )
    server.wait_for("digits", 1)
    images = digit_images(10)
    want = run_openvino(DIGITS, {"image": images})
    assert_same_digits(server.client.predict("digits", {"image": images}), want)
    over_rest = server.rest.predict("digits", {"image": images.tolist()})  # JSON numbers: back to the model's types
    assert_same_digits({k: np.asarray(v, dtype=want[k].dtype) for k, v in over_rest.items()}, want)
    assert server.rest.status("digits") == {1: ("AVAILABLE", "OK", "OK")}


def test_ovms_host_port_form_in_config_json(s3: S3Server, dropin_server, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    bucket = s3.bucket()
    s3.upload(bucket, "team/digits/3", DIGITS)
    config = tmp_path / "config.json"
    config.write_text(json.dumps({"model_config_list": [
        {"config": {"name": "digits", "base_path": f"s3://127.0.0.1:{s3.port}/{bucket}/team/digits",
                    "plugin_config": DIGITS_F32}},
    ]}))
    server = dropin_server("--config_path", str(config), "--s3_cache_dir", str(tmp_path / "cache"), env=s3_env())
    server.wait_for("digits", 3)
    images = digit_images(4, start=3)
    assert_same_digits(server.client.predict("digits", {"image": images}), run_openvino(DIGITS, {"image": images}))
    np.testing.assert_array_equal(sorted(server.client.status("digits")), [3])
