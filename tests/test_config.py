"""config.json, version policies and CLI flags, as OVMS reads them."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from dropin.cli import build_parser, settings_from_args
from dropin.config import ConfigError, VersionPolicy, read_config_file
from dropin.sources import LocalSource, parse_version


@pytest.mark.parametrize(
    "policy,expected",
    [
        ({"latest": {"num_versions": 2}}, {3, 5}),
        ({"latest": {}}, {5}),
        ({"all": {}}, {1, 3, 5}),
        ({"specific": {"versions": [1, 4, 5]}}, {1, 5}),
    ],
)
def test_version_policies(policy: dict, expected: set[int]) -> None:
    assert VersionPolicy.parse(policy).select([1, 3, 5]) == expected
    assert VersionPolicy.parse(json.dumps(policy)).select([5, 1, 3]) == expected


def test_default_policy_is_latest_one() -> None:
    assert VersionPolicy().select([2, 9, 4]) == {9}


@pytest.mark.parametrize(
    "policy",
    ["{", {"latest": {"num_versions": 0}}, {"all": {}, "latest": {}}, {"specific": {"versions": []}},
     {"specific": {"versions": [0]}}, {"newest": {}}, {"latest": {"count": 1}}],
)
def test_invalid_policies(policy) -> None:
    with pytest.raises(ConfigError, match="model_version_policy"):
        VersionPolicy.parse(policy)


def test_config_file(tmp_path: Path) -> None:
    (tmp_path / "config.json").write_text(json.dumps({"model_config_list": [
        {"config": {"name": "a", "base_path": "models/a", "nireq": 2, "target_device": "CPU",
                    "plugin_config": {"PERFORMANCE_HINT": "LATENCY"}, "model_version_policy": {"all": {}},
                    "color_format": "RGB"}},
        {"config": {"name": "b", "base_path": "/abs/b"}},
    ]}))
    a, b = read_config_file(tmp_path / "config.json")
    assert a.base_path == str(tmp_path / "models" / "a")  # relative to the config file
    assert a.load.nireq == 2 and a.load.plugin_config == {"PERFORMANCE_HINT": "LATENCY"}
    assert a.version_policy.kind == "all" and a.options["color_format"] == "RGB"
    assert b.base_path == "/abs/b" and b.version_policy == VersionPolicy()


@pytest.mark.parametrize(
    "document,message",
    [
        ("not json", "not valid JSON"),
        ({"models": []}, "model_config_list"),
        ({"model_config_list": [{"config": {"base_path": "x"}}]}, "non-empty string 'name'"),
        ({"model_config_list": [{"config": {"name": "a"}}]}, "needs a 'base_path'"),
        ({"model_config_list": [{"config": {"name": "a", "base_path": "x", "colour": 1}}]}, "unknown key"),
        ({"model_config_list": [{"config": {"name": "a", "base_path": "../x"}}]}, "'..'"),
        (
            {
                "model_config_list": [
                    {"config": {"name": "a", "base_path": "x"}},
                    {"config": {"name": "a", "base_path": "y"}},
                ]
            },
            "duplicate",
        ),
    ],
)
def test_invalid_config_files(tmp_path: Path, document, message: str) -> None:
    path = tmp_path / "config.json"
    path.write_text(document if isinstance(document, str) else json.dumps(document))
    with pytest.raises(ConfigError, match=message):
        read_config_file(path)


def test_cli_single_model_flags(tmp_path: Path) -> None:
    args = build_parser().parse_args([
        "serve", "--model_name", "m", "--model_path", str(tmp_path), "--port", "9100", "--rest_port", "8100",
        "--plugin_config", '{"INFERENCE_PRECISION_HINT":"f32"}', "--nireq", "3", "--target_device", "CPU",
        "--model_version_policy", '{"latest":{"num_versions":2}}', "--file_system_poll_wait_seconds", "0",
        "--grpc_workers", "1", "--log_level", "DEBUG",
    ])
    settings = settings_from_args(args)
    (model,) = settings.models
    assert (model.name, model.base_path) == ("m", str(tmp_path))
    assert model.load.plugin_config == {"INFERENCE_PRECISION_HINT": "f32"} and model.load.nireq == 3
    assert model.version_policy == VersionPolicy("latest", num_versions=2)
    assert settings.port == 9100 and settings.rest_port == 8100 and settings.file_system_poll_wait_seconds == 0


@pytest.mark.parametrize(
    "argv,message",
    [
        (["--config_path", "c.json", "--model_name", "m", "--model_path", "p"], "cannot be combined"),
        (["--model_name", "m"], "go together"),
        ([], "nothing to serve"),
        (["--model_name", "m", "--model_path", "p", "--plugin_config", "[1]"], "JSON object"),
    ],
)
def test_cli_refuses_bad_combinations(argv: list[str], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        settings_from_args(build_parser().parse_args(["serve", *argv]))


def test_version_directory_names() -> None:
    assert parse_version("1") == 1 and parse_version("0042") == 42
    for name in ("0", "-1", "2_tmp", "v1", "1.5", "", "٣", "99999999999999999999"):
        assert parse_version(name) is None, name


def test_local_source_lists_numbered_directories(tmp_path: Path) -> None:
    for name in ("1", "3", "tmp", "0", "2_tmp"):
        (tmp_path / name).mkdir()
    (tmp_path / "7").write_text("a file, not a version")
    assert LocalSource(str(tmp_path)).versions() == {1: tmp_path / "1", 3: tmp_path / "3"}


def test_monitoring_metrics_in_config_json(tmp_path: Path) -> None:
    from dropin.errors import DropinError

    path = tmp_path / "config.json"
    path.write_text(json.dumps({
        "model_config_list": [{"config": {"name": "a", "base_path": "a"}}],
        "monitoring": {"metrics": {"enable": True, "metrics_list": ["ovms_requests_success"]}},
    }))
    settings = settings_from_args(
        build_parser().parse_args(["serve", "--config_path", str(path), "--rest_port", "8123"])
    )
    assert settings.metrics_enable and list(settings.metrics_list) == ["ovms_requests_success"]
    with pytest.raises(DropinError, match="rest_port"):  # as OVMS: metrics need the REST port
        settings_from_args(build_parser().parse_args(["serve", "--config_path", str(path)]))
    path.write_text(json.dumps({"model_config_list": [], "monitoring": {"metrics": {"enable": "yes"}}}))
    with pytest.raises(ConfigError, match="boolean 'enable'"):
        settings_from_args(build_parser().parse_args(["serve", "--config_path", str(path), "--rest_port", "8123"]))
