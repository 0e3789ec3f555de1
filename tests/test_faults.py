"""Model and plugin faults on a real server: each shows the right status and a clear log line, and
every other version and model keeps serving."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import grpc
import numpy as np
import pytest

from dropin.testing import numpy_models as modelgen
from dropin.testing.client import outputs_of, predict_request
from dropin.testing.fake_plugins import install_fake_distribution
from dropin.testing.server import DropinServer
from dropin.testing.status import states, wait_until
from dropin.testing.versions import X, make_version, served_factor

AVAILABLE, LOADING, END = 30, 20, 50
def failing_model(version_dir: Path) -> Path:
    """Loads, but inference fails for inputs whose length is not a multiple of 3."""
    return modelgen.failing_model(version_dir)


GRAPH = "numpy_model.json"
FAULTS = {
    "corrupt_graph": lambda d: (
        (d / GRAPH).write_text('{"inputs": {"x": {"dty'),
        (d / "factor.npy").write_bytes(b"\1\2"),
    ),
    "missing_weights": lambda d: (modelgen.scale_model(d, shape=(-1, 2)), (d / "factor.npy").unlink()),
    "empty": lambda d: None,
    "truncated_weights": lambda d: (modelgen.scale_model(d, shape=(-1, 2)), (d / "factor.npy").write_bytes(b"\0" * 3)),
    "fifo": lambda d: os.mkfifo(d / GRAPH),
    "symlink_loop": lambda d: (os.symlink(d / "loop", d / "loop"), os.symlink(d / GRAPH, d / GRAPH)),
    "garbage_graph": lambda d: (d / GRAPH).write_bytes(os.urandom(256)),
}


@pytest.fixture(scope="module")
def faulty(tmp_path_factory: pytest.TempPathFactory) -> tuple[DropinServer, Path]:
    root = tmp_path_factory.mktemp("faults")
    staging = root / "staging"
    staging.mkdir()
    for name, make in FAULTS.items():
        (root / name).mkdir()
        make_version(root / name, 1, 1.0, staging)  # a good version 1 ...
        broken = root / name / "2"  # ... and a broken version 2
        broken.mkdir()
        make(broken)
    failing_model(root / "failing" / "1")
    config = {"model_config_list": [{"config": {"name": n, "base_path": n}} for n in [*FAULTS, "failing"]]}
    (root / "config.json").write_text(json.dumps(config))
    server = DropinServer(["--config_path", str(root / "config.json"), "--file_system_poll_wait_seconds", "0"])
    try:
        server.wait_for("failing", 1)
        for name in FAULTS:
            server.wait_for(name, 1)
        yield server, root
    finally:
        server.stop()


@pytest.mark.parametrize("fault", sorted(FAULTS))
def test_broken_version_shows_why_and_the_previous_one_serves(faulty, fault: str) -> None:
    server, root = faulty
    seen = states(server, fault)
    assert seen[1] == (AVAILABLE, 0, "OK")
    state, code, message = seen[2]
    assert (state, code) == (LOADING, 2), seen
    assert str(root / fault / "2") in message or "no backend can load" in message, message
    wait_until(
        lambda: f"model {fault} version 2: LOADING (load failed:" in server.log, 10, "no log line for the failed load"
    )
    assert served_factor(server, fault) == 1.0
    with pytest.raises(grpc.RpcError) as info:
        served_factor(server, fault, version=2)
    assert info.value.code() == grpc.StatusCode.UNAVAILABLE


def test_inference_failure_is_internal_and_the_model_keeps_serving(faulty) -> None:
    server, _ = faulty
    request = predict_request("failing", {"x": np.ones(7, np.float32)})
    with pytest.raises(grpc.RpcError) as info:
        server.predict.Predict(request, timeout=20)
    assert info.value.code() == grpc.StatusCode.INTERNAL
    assert info.value.details().startswith("Internal inference error - backend numpy: ")
    assert "\n" not in info.value.details() and ".cpp" not in info.value.details()
    good = outputs_of(
        server.predict.Predict(predict_request("failing", {"x": np.arange(6, dtype=np.float32)}), timeout=20)
    )
    np.testing.assert_array_equal(good["y"], np.arange(6, dtype=np.float32).reshape(3, 2))


def test_model_names_never_become_paths(faulty) -> None:
    server, root = faulty
    for name in ("../faults", "/etc/passwd", "..", "corrupt_graph/../empty", "corrupt_graph/1"):
        with pytest.raises(grpc.RpcError) as info:
            server.predict.Predict(predict_request(name, {"x": X}), timeout=10)
        assert info.value.code() == grpc.StatusCode.NOT_FOUND
        assert info.value.details() == "Model with requested name is not found"


# -- plugin faults ----------------------------------------------------------------------------

FAULTY_PLUGIN = '''
import asyncio, os, time
import numpy as np
from dropin.backend import Backend, LoadedModel
from dropin.dtypes import DType
from dropin.hookspecs import hookimpl
from dropin.preprocess import InputConverter, Preprocessor
from dropin.shapes import TensorSpec

class FaultyModel(LoadedModel):
    inputs = {"x": TensorSpec.of("x", DType.FP32, [-1, 2])}
    outputs = {"y": TensorSpec.of("y", DType.FP32, [-1, 2])}

    def __init__(self, mode):
        self.mode = mode

    async def infer(self, inputs):
        if self.mode == "infer":
            raise ZeroDivisionError("the faulty backend divides by zero")
        return {"y": inputs["x"] * 2}

class FaultyBackend(Backend):
    @classmethod
    def claims(cls, version_dir):
        return (version_dir / "faulty.txt").exists()

    def load(self, version_dir, options):
        mode = (version_dir / "faulty.txt").read_text().strip()
        if mode == "load":
            raise MemoryError("the faulty backend ran out of memory on purpose")
        if mode == "slow":
            time.sleep(1.5)
        return FaultyModel(mode)

class Explode(InputConverter):
    def convert(self, name, shape, values):
        raise KeyError("the faulty preprocessor lost its key")

class FaultyPreprocessor(Preprocessor):
    def claim(self, spec, options):
        return Explode() if options.get("faulty_mode") == "explode" else None

@hookimpl
def dropin_declare_vocabulary(vocabulary):
    vocabulary.model_key("faulty_mode", flag=True, help="explode: the faulty preprocessor claims the inputs")

@hookimpl
def dropin_register_backends(registry):
    registry.add("faulty", FaultyBackend)

@hookimpl
def dropin_register_preprocessors(registry):
    registry.add("explode", FaultyPreprocessor)
'''


@pytest.fixture
def faulty_plugin(tmp_path: Path) -> Path:
    site = tmp_path / "site"
    install_fake_distribution(site, "dropin_faulty", {"faulty": "faulty_plugin"}, {"faulty_plugin": FAULTY_PLUGIN})
    return site


def faulty_version(repo: Path, number: int, mode: str) -> None:
    (repo / str(number)).mkdir(parents=True)
    (repo / str(number) / "faulty.txt").write_text(mode)


def test_backend_that_raises_at_load_or_per_request(start_server, tmp_path: Path, faulty_plugin: Path) -> None:
    repo = tmp_path / "m"
    faulty_version(repo, 1, "infer")
    faulty_version(repo, 2, "load")
    server = start_server("--model_name", "m", "--model_path", str(repo), "--model_version_policy", '{"all":{}}',
                          env={"PYTHONPATH": str(faulty_plugin)})
    server.wait_for("m", 1)
    wait_until(lambda: states(server).get(2, (0, 0, ""))[1] != 0)
    message = states(server)[2][2]
    assert message.startswith("backend faulty could not load") and "out of memory on purpose" in message, message
    with pytest.raises(grpc.RpcError) as info:
        server.predict.Predict(predict_request("m", {"x": X}, version=1), timeout=10)
    assert info.value.code() == grpc.StatusCode.INTERNAL
    assert (
        info.value.details()
        == "Internal inference error - backend faulty: ZeroDivisionError: the faulty backend divides by zero"
    )
    assert server.proc.poll() is None


def test_preprocessor_that_raises_names_the_plugin(start_server, tmp_path: Path, faulty_plugin: Path) -> None:
    repo = tmp_path / "m"
    faulty_version(repo, 1, "ok")
    server = start_server("--model_name", "m", "--model_path", str(repo), "--faulty_mode", "explode",
                          env={"PYTHONPATH": str(faulty_plugin)})
    server.wait_for("m", 1)
    request = predict_request("m", {})
    request.inputs["x"].dtype = 7
    request.inputs["x"].tensor_shape.dim.add().size = 1
    request.inputs["x"].string_val.append(b"whatever")
    with pytest.raises(grpc.RpcError) as info:
        server.predict.Predict(request, timeout=10)
    assert info.value.code() == grpc.StatusCode.INTERNAL
    assert "'explode'" in info.value.details() and "KeyError" in info.value.details()
    response = server.predict.Predict(predict_request("m", {"x": X}), timeout=10)  # tensors bypass it
    np.testing.assert_array_equal(outputs_of(response)["y"], X * 2)


def test_version_deleted_while_it_loads(start_server, tmp_path: Path, faulty_plugin: Path) -> None:
    repo = tmp_path / "m"
    faulty_version(repo, 1, "ok")
    server = start_server("--model_name", "m", "--model_path", str(repo), env={"PYTHONPATH": str(faulty_plugin)})
    server.wait_for("m", 1)
    staged = tmp_path / "staged"
    faulty_version(staged, 2, "slow")
    os.rename(staged / "2", repo / "2")
    server.wait_for("m", 2, LOADING)
    shutil.rmtree(repo / "2")
    server.wait_for("m", 2, END)
    assert states(server)[1][0] == AVAILABLE
    response = server.predict.Predict(predict_request("m", {"x": X}), timeout=10)
    np.testing.assert_array_equal(outputs_of(response)["y"], X * 2)
