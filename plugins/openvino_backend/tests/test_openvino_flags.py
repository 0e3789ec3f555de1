"""End to end, OVMS's flags whose meaning is OpenVINO's: --cache_dir (OpenVINO's model cache),
--cpu_extension (a library of custom operations, built here from its C++ source against the
installed OpenVINO), the reshaping flags and --precision with a real OpenVINO model, and the
optional metrics ovms_infer_req_queue_size / ovms_infer_req_active from the infer-request pool."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import openvino as ov
import openvino.opset13 as ops
import pytest
from prometheus_client.parser import text_string_to_metric_families

import dropin_openvino.runtime  # noqa: F401  (imports openvino with its telemetry off; first)
from dropin.testing.raw_http import get
from dropin.testing.server import DropinServer, free_port
from dropin_openvino import modelgen

X = np.array([[1.0, 2.0]], np.float32)
DATA = Path(__file__).parent / "data"

# y = DropinNegate(x): an operation only the extension library knows
NEGATE_IR = """<?xml version="1.0"?>
<net name="negate" version="11"><layers>
<layer id="0" name="x" type="Parameter" version="opset1"><data shape="?,2" element_type="f32"/>
 <output><port id="0" precision="FP32" names="x"><dim>-1</dim><dim>2</dim></port></output></layer>
<layer id="1" name="negate" type="DropinNegate" version="extension">
 <input><port id="0" precision="FP32"><dim>-1</dim><dim>2</dim></port></input>
 <output><port id="1" precision="FP32" names="y"><dim>-1</dim><dim>2</dim></port></output></layer>
<layer id="2" name="y" type="Result" version="opset1">
 <input><port id="0" precision="FP32"><dim>-1</dim><dim>2</dim></port></input></layer>
</layers><edges><edge from-layer="0" from-port="0" to-layer="1" to-port="0"/>
<edge from-layer="1" from-port="1" to-layer="2" to-port="0"/></edges></net>
"""


def serve(*args: str) -> DropinServer:
    return DropinServer(["--file_system_poll_wait_seconds", "0", *args], start_timeout=60)


def test_cache_dir_writes_openvino_cache_then_loads_from_it(tmp_path: Path) -> None:
    modelgen.scale_model(tmp_path / "m" / "1", shape=(-1, 2), factor=2.0)
    cache = tmp_path / "cache"
    expected = modelgen.run_openvino(tmp_path / "m" / "1", {"x": X})["y"]
    with serve("--model_name", "m", "--model_path", str(tmp_path / "m"), f"--cache_dir={cache}") as server:
        server.wait_for("m", 1)
        np.testing.assert_allclose(server.client.predict("m", {"x": X})["y"], expected)
    blobs = {f: f.stat().st_mtime_ns for f in cache.rglob("*") if f.is_file()}
    assert blobs, "the first load wrote no cache"
    with serve("--model_name", "m", "--model_path", str(tmp_path / "m"), "--cache_dir", str(cache)) as server:
        server.wait_for("m", 1)
        np.testing.assert_allclose(server.client.predict("m", {"x": X})["y"], expected)
    # the second process imported the compiled model: nothing new was written
    assert {f: f.stat().st_mtime_ns for f in cache.rglob("*") if f.is_file()} == blobs


def test_allow_cache_false_keeps_a_model_out_of_the_cache(tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    for name, factor in (("cached", 2.0), ("uncached", 3.0)):
        modelgen.scale_model(tmp_path / name / "1", shape=(-1, 2), factor=factor)
    config = {"model_config_list": [
        {"config": {"name": "cached", "base_path": str(tmp_path / "cached")}},
        {"config": {"name": "uncached", "base_path": str(tmp_path / "uncached"), "allow_cache": False}},
    ]}
    (tmp_path / "config.json").write_text(json.dumps(config))
    with serve("--config_path", str(tmp_path / "config.json"), "--cache_dir", str(cache)) as server:
        server.wait_for("cached", 1)
        server.wait_for("uncached", 1)
        np.testing.assert_allclose(server.client.predict("uncached", {"x": X})["y"], X * 3.0, rtol=1e-2)
        written = [f for f in cache.rglob("*") if f.is_file()]
    assert len(written) == 1, written  # the blob of "cached" only


def test_a_missing_cpu_extension_is_a_clear_start_up_error(tmp_path: Path) -> None:
    modelgen.scale_model(tmp_path / "m" / "1", shape=(-1, 2))
    out = subprocess.run([sys.executable, "-m", "dropin", "--model_name", "m", "--model_path", str(tmp_path / "m"),
                          "--cpu_extension", str(tmp_path / "nope.so")], capture_output=True, text=True, timeout=60)
    assert out.returncode == 2, out.stderr
    assert f"plugin openvino: --cpu_extension {tmp_path / 'nope.so'}: no such file" in out.stderr
    assert "Traceback" not in out.stderr


@pytest.fixture(scope="module")
def extension(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The DropinNegate extension, compiled against the installed OpenVINO's headers and library."""
    compiler = shutil.which("g++")
    if compiler is None:
        pytest.skip("no C++ compiler to build the extension library")
    root = Path(ov.__file__).parent
    library = next((root / "libs").glob("libopenvino.so.*"))
    out = tmp_path_factory.mktemp("extension") / "libdropin_negate.so"
    subprocess.run([compiler, "-std=c++17", "-shared", "-fPIC", "-O1", f"-I{root / 'include'}",
                    str(DATA / "dropin_negate_extension.cpp"), "-o", str(out), str(library)], check=True, timeout=300)
    return out


def test_cpu_extension_serves_a_model_with_a_custom_operation(tmp_path: Path, extension: Path) -> None:
    version = tmp_path / "negate" / "1"
    version.mkdir(parents=True)
    (version / "model.xml").write_text(NEGATE_IR)
    (version / "model.bin").write_bytes(b"")
    core = ov.Core()
    core.add_extension(str(extension))
    reference = core.compile_model(core.read_model(str(version / "model.xml")), "CPU").infer_new_request({"x": X})
    expected = next(iter(reference.values()))
    with serve("--model_name", "negate", "--model_path", str(tmp_path / "negate"),
               f"--cpu_extension={extension}") as server:
        server.wait_for("negate", 1)
        np.testing.assert_array_equal(server.client.predict("negate", {"x": X})["y"], expected)
        np.testing.assert_array_equal(expected, -X)
    # without the library the operation is unknown: the version fails to load, with the reason
    with serve("--model_name", "negate", "--model_path", str(tmp_path / "negate")) as server:
        server.wait_for_log("could not load .*DropinNegate")
        status = server.client.status_response("negate").model_version_status[0]
        assert status.state == 20 and "DropinNegate" in status.status.error_message, status  # LOADING


@pytest.mark.parametrize("equals", [False, True], ids=["flag value", "flag=value"])
def test_reshaping_flags_and_precision_with_openvino(tmp_path: Path, equals: bool) -> None:
    modelgen.scale_model(tmp_path / "m" / "1", shape=(-1, 2), factor=2.0)
    flags = {"shape": "(3,2)", "batch_size": "3", "layout": "NC", "nireq": "2", "target_device": "CPU",
             "plugin_config": '{"NUM_STREAMS": "1"}', "precision": "FP32", "model_version_policy": '{"all": {}}'}
    args = [f"--{k}={v}" for k, v in flags.items()] if equals else [a for k, v in flags.items() for a in (f"--{k}", v)]
    x = np.arange(6, dtype=np.float32).reshape(3, 2)
    with serve("--model_name", "m", "--model_path", str(tmp_path / "m"), *args) as server:
        server.wait_for("m", 1)
        np.testing.assert_allclose(server.client.predict("m", {"x": x})["y"], x * 2)
        assert server.client.metadata("m")["inputs"]["x"][1] == (3, 2)
    assert server.log.count("--precision FP32: accepted for OVMS compatibility and ignored") == 1


def matmul_chain(version_dir: Path, width: int = 1024, depth: int = 16) -> None:
    """x: FP32 [-1, width] -> y, through `depth` dense layers: tens of milliseconds per batch of 64."""
    x = ops.parameter(ov.PartialShape([-1, width]), ov.Type.f32, name="x")
    x.output(0).get_tensor().set_names({"x"})
    rng = np.random.default_rng(0)
    h = x.output(0)
    for _ in range(depth):
        w = (rng.standard_normal((width, width)) / np.sqrt(width)).astype(np.float32)
        h = ops.matmul(h, ops.constant(w), False, False).output(0)
    y = ops.result(h)
    y.output(0).get_tensor().set_names({"y"})
    modelgen.save(ov.Model([y], [x], "chain"), version_dir)


def _gauges(text: str) -> dict[str, dict[tuple[str, str], float]]:
    found: dict[str, dict[tuple[str, str], float]] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if "version" in sample.labels:
                found.setdefault(sample.name, {})[(sample.labels["name"], sample.labels["version"])] = sample.value
    return found


def test_infer_request_pool_metrics(tmp_path: Path) -> None:
    # a model slow enough that requests are in flight while /metrics is read
    matmul_chain(tmp_path / "slow" / "1")
    modelgen.scale_model(tmp_path / "m" / "1", shape=(-1, 2))
    config = tmp_path / "config.json"
    config.write_text('{"model_config_list": [{"config": {"name": "slow", "base_path": "slow", "nireq": 3}},'
                      '{"config": {"name": "m", "base_path": "m", "nireq": 2}}],'
                      '"monitoring": {"metrics": {"enable": true, "metrics_list": ["ovms_requests_success",'
                      '"ovms_infer_req_queue_size", "ovms_infer_req_active"]}}}')
    with serve("--config_path", str(config), "--rest_port", str(free_port())) as server:
        server.wait_for("slow", 1)
        server.wait_for("m", 1)
        idle = _gauges(get(server, "/metrics").body.decode())
        assert idle["ovms_infer_req_queue_size"] == {("m", "1"): 2, ("slow", "1"): 3}
        assert idle["ovms_infer_req_active"] == {("m", "1"): 0, ("slow", "1"): 0}
        stop = threading.Event()
        batch = np.ones((64, 1024), np.float32)

        def load() -> None:
            while not stop.is_set():
                server.client.predict("slow", {"x": batch})

        threads = [threading.Thread(target=load) for _ in range(6)]
        for thread in threads:
            thread.start()
        seen = []
        try:
            for _ in range(200):
                seen.append(_gauges(get(server, "/metrics").body.decode())["ovms_infer_req_active"][("slow", "1")])
                if max(seen) == 3:
                    break
        finally:
            stop.set()
            for thread in threads:
                thread.join()
        assert 1 <= max(seen) <= 3, seen


def test_a_fast_model_gets_more_infer_requests_only_when_nireq_is_the_backends_choice(tmp_path: Path) -> None:
    # OpenVINO's optimum is one infer request here: gRPC handler threads would queue for it, each
    # put to sleep and woken for a 1x10 inference; the pool grows instead (serving.ELASTIC_LIMIT).
    # A nireq the user set is kept.
    from dropin_openvino.serving import ELASTIC_LIMIT

    modelgen.scale_model(tmp_path / "auto" / "1", shape=(1, 10), factor=3.0, offset=1.0)
    modelgen.scale_model(tmp_path / "fixed" / "1", shape=(1, 10), factor=3.0, offset=1.0)
    optimum = int(ov.Core().compile_model(tmp_path / "auto" / "1" / "model.xml", "CPU")
                  .get_property("OPTIMAL_NUMBER_OF_INFER_REQUESTS"))
    config = tmp_path / "config.json"
    config.write_text(json.dumps({
        "model_config_list": [{"config": {"name": "auto", "base_path": "auto"}},
                              {"config": {"name": "fixed", "base_path": "fixed", "nireq": 1}}],
        "monitoring": {"metrics": {"enable": True, "metrics_list": ["ovms_infer_req_queue_size"]}}}))
    x = np.random.default_rng(0).random((1, 10), np.float32)
    expected = ov.Core().compile_model(tmp_path / "auto" / "1" / "model.xml", "CPU")({0: x})[0]
    with serve("--config_path", str(config), "--rest_port", str(free_port()), "--grpc_max_threads", "8") as server:
        server.wait_for("auto", 1)
        server.wait_for("fixed", 1)
        assert _gauges(get(server, "/metrics").body.decode())["ovms_infer_req_queue_size"] == {
            ("auto", "1"): optimum, ("fixed", "1"): 1}

        def load(model: str) -> None:
            for _ in range(300):
                np.testing.assert_allclose(server.client.predict(model, {"x": x})["y"], expected, rtol=1e-2)

        for model in ("auto", "fixed"):
            threads = [threading.Thread(target=load, args=(model,)) for _ in range(8)]
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join()
        sizes = _gauges(get(server, "/metrics").body.decode())["ovms_infer_req_queue_size"]
    assert sizes[("fixed", "1")] == 1
    assert optimum < sizes[("auto", "1")] <= min(8, ELASTIC_LIMIT), sizes
