"""Plugins own their vocabulary: a third-party plugin, installed as a real entry point, adds a
server-wide flag, a per-model flag that is also a config.json key (its values checked by the
plugin) and an error, and the real server uses all three, exactly as the image plugin uses its
own. (The first-party plugins' own vocabulary, cheap imports and configuration are checked in
their tests: plugins/<name>/tests/test_*_vocabulary.py.)"""

from __future__ import annotations

import base64
import json
import subprocess
import sys
import textwrap
from pathlib import Path

import grpc
import numpy as np
import pytest

from dropin._proto.tensorflow_serving.apis import prediction_service_pb2_grpc
from dropin.testing.client import outputs_of, predict_request
from dropin.testing.server import DropinServer

# A backend (y = x * scale, from tally.json) and a preprocessor that turns strings into numbers:
# len(text) * shout_weight (a model key, also the flag --shout_weight) + shout_bonus (a server
# option, --shout_bonus); texts longer than 10 characters are refused with the plugin's own error.
SHOUT_PLUGIN = '''
import asyncio
import json

import grpc
import numpy as np

from dropin.backend import Backend, LoadedModel
from dropin.dtypes import DType
from dropin.errors import DropinError, ErrorStatus
from dropin.hookspecs import hookimpl
from dropin.preprocess import InputConverter, Preprocessor, check_binary_batch
from dropin.shapes import TensorSpec

SHOUT_TOO_LONG = ErrorStatus("SHOUT_TOO_LONG", "Shout is too long", grpc.StatusCode.RESOURCE_EXHAUSTED, 413)
SETTINGS = {"bonus": 0.0}


class TallyModel(LoadedModel):
    def __init__(self, scale):
        self.scale = np.float32(scale)

    inputs = {"x": TensorSpec.of("x", DType.FP32, [-1])}
    outputs = {"y": TensorSpec.of("y", DType.FP32, [-1])}

    async def infer(self, inputs):
        await asyncio.sleep(0)
        return {"y": inputs["x"] * self.scale}


class TallyBackend(Backend):
    @classmethod
    def claims(cls, version_dir):
        return (version_dir / "tally.json").is_file()

    def load(self, version_dir, options):
        return TallyModel(json.loads((version_dir / "tally.json").read_text())["scale"])


class ShoutConverter(InputConverter):
    blocking = False

    def __init__(self, spec, weight):
        self.batch = spec.shape[0]
        self.weight = weight

    def convert(self, name, shape, values):
        check_binary_batch(name, shape, values, self.batch)
        for value in values:
            if len(value) > 10:
                raise DropinError(SHOUT_TOO_LONG, f"{len(value)} characters, at most 10; input name: {name}")
        lengths = np.array([len(v) for v in values], np.float32)
        return lengths * np.float32(self.weight) + np.float32(SETTINGS["bonus"])


class ShoutPreprocessor(Preprocessor):
    def claim(self, spec, options):
        if spec.dtype is DType.FP32 and spec.rank == 1:
            return ShoutConverter(spec, options.get("shout_weight", 1))
        return None


def check_weight(value):
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value <= 0:
        raise ValueError(f"must be a positive number, got {value!r}")
    return value


@hookimpl
def dropin_declare_vocabulary(vocabulary):
    vocabulary.model_key("shout_weight", check=check_weight, flag=True, from_text=float, help="points per character")
    vocabulary.server_option("shout_bonus", default=0.0, from_text=float, help="points added to every text")
    vocabulary.error(SHOUT_TOO_LONG)


@hookimpl
def dropin_configure(options):
    SETTINGS["bonus"] = options["shout_bonus"]


@hookimpl
def dropin_register_backends(registry):
    registry.add("tally", TallyBackend)


@hookimpl
def dropin_register_preprocessors(registry):
    registry.add("shout", ShoutPreprocessor)
'''


def install(site: Path, dist: str, entry_point: str, module: str, source: str) -> None:
    """A minimal installed distribution: a dist-info with an entry point of group "dropin"."""
    info = site / f"{dist}-1.0.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {dist}\nVersion: 1.0\n")
    (info / "entry_points.txt").write_text(f"[dropin]\n{entry_point} = {module}\n")
    (site / f"{module}.py").write_text(textwrap.dedent(source))


@pytest.fixture
def site(tmp_path: Path) -> Path:
    site = tmp_path / "site"
    install(site, "dropin_shout", "shout", "shout_plugin", SHOUT_PLUGIN)
    return site


@pytest.fixture
def model(tmp_path: Path) -> Path:
    (tmp_path / "m" / "1").mkdir(parents=True)
    (tmp_path / "m" / "1" / "tally.json").write_text(json.dumps({"scale": 1.0}))
    return tmp_path / "m"


def run_dropin(site: Path, *args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "dropin", *args], capture_output=True, text=True, timeout=120,
        env={"PATH": "/usr/bin:/bin", "PYTHONPATH": str(site), **(env or {})},
    )


def test_third_party_flag_model_key_and_error_reach_the_real_server(dropin_server, site: Path, model: Path) -> None:
    from dropin.testing import free_port

    server: DropinServer = dropin_server(
        "--model_name", "m", "--model_path", str(model), "--shout_weight", "2", "--shout_bonus", "0.5",
        "--rest_port", str(free_port()), env={"PYTHONPATH": str(site)},
    )
    server.wait_for("m", 1)
    texts = np.array([b"ab", b"abcd"], dtype=object)
    np.testing.assert_array_equal(server.client.predict("m", {"x": texts})["y"], np.float32([4.5, 8.5]))
    body = {"instances": [{"b64": base64.b64encode(t).decode()} for t in (b"ab", b"abcd")]}
    assert server.rest.request("POST", "/v1/models/m:predict", body) == (200, {"predictions": [4.5, 8.5]})

    # the plugin's error, answered exactly as the core's: "<base> - <details>", its code and status
    long = np.array([b"a" * 11], dtype=object)
    with pytest.raises(grpc.RpcError) as info:
        server.client.predict("m", {"x": long})
    assert info.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert info.value.details() == "Shout is too long - 11 characters, at most 10; input name: x"
    body = {"instances": [{"b64": base64.b64encode(b"a" * 11).decode()}]}
    assert server.rest.request("POST", "/v1/models/m:predict", body) == (
        413, {"error": "Shout is too long - 11 characters, at most 10; input name: x"}
    )
    assert server.client.predict("m", {"x": texts})["y"].tolist() == [4.5, 8.5]  # still serving
    assert "Traceback" not in server.log


def test_third_party_model_key_in_config_json(dropin_server, site: Path, model: Path, tmp_path: Path) -> None:
    config = tmp_path / "config.json"
    entry = {"name": "m", "base_path": str(model), "shout_weight": 3}
    config.write_text(json.dumps({"model_config_list": [{"config": entry}]}))
    server = dropin_server("--config_path", str(config), env={"PYTHONPATH": str(site)})
    server.wait_for("m", 1)
    np.testing.assert_array_equal(server.client.predict("m", {"x": np.array([b"abc"], dtype=object)})["y"], [9.0])


@pytest.mark.parametrize(
    "entry, message",
    [
        ({"shout_weight": -1}, "Invalid configuration - model 'm': shout_weight: must be a positive number, got -1"),
        ({"shout_wieght": 3}, "Invalid configuration - model 'm': unknown key(s) shout_wieght"),
    ],
)
def test_declared_keys_are_checked_by_their_plugin_and_unknown_keys_refused(
    site: Path, model: Path, tmp_path: Path, entry: dict[str, object], message: str
) -> None:
    config = tmp_path / "config.json"
    config.write_text(json.dumps({"model_config_list": [{"config": {"name": "m", "base_path": str(model), **entry}}]}))
    out = run_dropin(site, "serve", "--config_path", str(config), "--port", "0")
    assert out.returncode == 2, out.stderr
    assert message in out.stderr and "Traceback" not in out.stderr


def test_bad_flag_values_and_the_flags_of_a_blocked_plugin(site: Path, model: Path) -> None:
    serve = ["serve", "--model_name", "m", "--model_path", str(model), "--port", "0"]
    out = run_dropin(site, *serve, "--shout_bonus", "lots")
    assert out.returncode == 2
    assert "Invalid configuration - --shout_bonus could not convert string to float: 'lots'" in out.stderr
    out = run_dropin(site, *serve, "--shout_weight", "0")
    assert out.returncode == 2 and "model 'm': shout_weight: must be a positive number, got 0.0" in out.stderr
    out = run_dropin(site, "serve", "--model_name", "m", "--model_path", str(model), "--shout_weight", "2",
                     env={"DROPIN_BLOCK_PLUGINS": "shout"})
    assert out.returncode == 2 and "unrecognized arguments: --shout_weight 2" in out.stderr


def test_help_and_dropin_plugins_show_what_each_plugin_declared(site: Path) -> None:
    usage = run_dropin(site, "serve", "--help").stdout
    assert "--shout_weight SHOUT_WEIGHT" in usage and "points per character (plugin shout)" in usage
    assert "--shout_bonus SHOUT_BONUS" in usage
    out = run_dropin(site, "plugins").stdout
    assert (
        "shout (dropin_shout 1.0)\n  module: shout_plugin\n"
        "  hooks: dropin_configure, dropin_declare_vocabulary, dropin_register_backends, "
        "dropin_register_preprocessors\n"
        "  model keys: shout_weight (--shout_weight)\n  server options: --shout_bonus\n"
        "  errors: SHOUT_TOO_LONG (RESOURCE_EXHAUSTED, 413)\n  backends: tally\n  preprocessors: shout\n"
    ) in out


def test_a_plugin_cannot_take_the_core_s_names_or_another_plugin_s(site: Path) -> None:
    install(site, "dropin_thief", "thief", "thief_plugin", '''
        import grpc
        from dropin.errors import ErrorStatus
        from dropin.hookspecs import hookimpl

        @hookimpl
        def dropin_declare_vocabulary(vocabulary):
            vocabulary.model_key("shout_weight")
    ''')
    out = run_dropin(site, "plugins").stdout
    assert ("thief (dropin_thief 1.0)\n  module: thief_plugin\n  error: dropin_declare_vocabulary failed: ValueError: "
            "model key 'shout_weight' is declared twice: by plugin 'shout' and by plugin 'thief'") in out
    from dropin.errors import ErrorStatus
    from dropin.vocabulary import Vocabulary

    vocabulary = Vocabulary(frozenset({"shape"}))
    with pytest.raises(ValueError, match="model key 'shape' is the core's"):
        vocabulary.model_key("shape")
    with pytest.raises(ValueError, match="INVALID_SHAPE is the core's"):
        vocabulary.error(ErrorStatus("INVALID_SHAPE", "Invalid input shape", grpc.StatusCode.INVALID_ARGUMENT, 400))
    with pytest.raises(ValueError, match="HTTP error status"):
        ErrorStatus("MINE", "Mine", grpc.StatusCode.INVALID_ARGUMENT, 200)


def test_a_plugin_flag_that_is_the_core_s_is_ignored_with_an_error(site: Path, model: Path) -> None:
    install(site, "dropin_port", "porter", "port_plugin", '''
        from dropin.hookspecs import hookimpl

        @hookimpl
        def dropin_declare_vocabulary(vocabulary):
            vocabulary.server_option("rest_port", default=1)
    ''')
    out = run_dropin(site, "serve", "--help")
    assert out.returncode == 0 and "plugin porter declares --rest_port, a flag of the core's; ignored" in out.stderr


def test_a_plugin_check_that_crashes_refuses_the_configuration_naming_the_plugin() -> None:
    from dropin.config import ConfigError, model_config
    from dropin.vocabulary import Vocabulary

    vocabulary = Vocabulary()
    vocabulary.current_plugin = "buggy"
    vocabulary.model_key("size", check=lambda value: value["oops"])
    with pytest.raises(ConfigError, match=r"model 'm': size: plugin buggy failed to check it: TypeError: "):
        model_config({"name": "m", "base_path": "/m", "size": 3}, vocabulary=vocabulary)
    assert model_config({"name": "m", "base_path": "/m"}, vocabulary=vocabulary).options == {}


def test_every_worker_of_workers_2_gets_the_plugin_flags(dropin_server, site: Path, model: Path) -> None:
    """--workers N hands the command line on: each worker reads the plugin's flags and is configured."""
    server = dropin_server(
        "--workers", "2", "--model_name", "m", "--model_path", str(model),
        "--shout_weight", "2", "--shout_bonus", "0.5", env={"PYTHONPATH": str(site)},
    )
    server.wait_for_log(r"initial model loading finished: server ready \(2 workers", timeout=60)
    request = predict_request("m", {"x": np.array([b"ab", b"abcd"], dtype=object)})
    for _ in range(6):  # a new connection each time, which the kernel hands to either worker
        with grpc.insecure_channel(f"127.0.0.1:{server.port}", options=[("grpc.use_local_subchannel_pool", 1)]) as ch:
            response = prediction_service_pb2_grpc.PredictionServiceStub(ch).Predict(request, timeout=30)
            np.testing.assert_array_equal(outputs_of(response)["y"], np.float32([4.5, 8.5]))
