"""An OpenVINO IR served from a config.json with every OVMS model key (valid values) and a
mapping_config.json: the real server answers gRPC and REST clients under the mapped names, with
OpenVINO's own results, and logs each key without effect once."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from dropin.testing.server import free_port
from dropin_openvino import modelgen

SHAPE = (1, 3, 4, 4)


def test_ir_with_every_ovms_key_and_a_mapping(dropin_server, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    version = modelgen.scale_model(tmp_path / "models" / "img" / "1", shape=SHAPE, factor=3.0, offset=1.0)
    (version / "mapping_config.json").write_text(json.dumps({"inputs": {"x": "image"}, "outputs": {"y": "scores"}}))
    config = tmp_path / "models" / "config.json"
    config.write_text(json.dumps({"model_config_list": [{"config": {
        "name": "img", "base_path": "img", "batch_size": 1, "shape": {"image": "(1,3,4,4)"},
        "layout": {"image": "NCHW"},  # per input, by the mapped name, as OVMS allows
        "model_version_policy": {"all": {}}, "nireq": 1, "target_device": "CPU",
        "plugin_config": {"INFERENCE_PRECISION_HINT": "f32"}, "allow_cache": False,
        "mean": [0, 0, 0], "scale": [1, 1, 1], "color_format": "BGR", "precision": "FP32",
        "stateful": False, "low_latency_transformation": False, "idle_sequence_cleanup": False,
        "max_sequence_number": 10, "custom_loader_options": {"loader_name": "l"},
    }}]}))
    srv = dropin_server("--config_path", str(config), "--rest_port", str(free_port()))
    srv.wait_for("img", 1)
    x = np.arange(np.prod(SHAPE), dtype=np.float32).reshape(SHAPE) / 7
    expected = modelgen.run_openvino(version, {"x": x})["y"]  # OpenVINO on the same files, names unmapped

    signature = srv.client.metadata("img")
    assert signature["inputs"] == {"image": (signature["inputs"]["image"][0], SHAPE)}
    assert set(signature["outputs"]) == {"scores"}
    np.testing.assert_allclose(srv.client.predict("img", {"image": x})["scores"], expected, rtol=1e-6)
    np.testing.assert_allclose(srv.rest.predict("img", {"image": x})["scores"], expected, rtol=1e-6)
    status, answer = srv.rest.request("POST", "/v1/models/img:predict", {"instances": x.tolist()})
    assert status == 200, answer
    np.testing.assert_allclose(answer["predictions"], expected, rtol=1e-6)
    status, answer = srv.rest.request("POST", "/v1/models/img:predict", {"inputs": {"x": x.tolist()}})
    assert status == 400 and "Required input: image" in answer["error"], answer

    for key in ("precision", "custom_loader_options"):
        assert srv.log.count(f"model img: config key {key} is not supported") == 1, (key, srv.log)
    for honoured in ("batch_size", "shape", "layout", "mean", "scale", "color_format", "allow_cache", "stateful",
                     "low_latency_transformation", "idle_sequence_cleanup", "max_sequence_number"):
        assert f"config key {honoured} is not supported" not in srv.log
