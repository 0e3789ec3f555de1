"""The OpenVINO plugin as `dropin plugins` shows it: installed, its hooks and what it registers,
its place in the backend claim order, and blocked; its conformance models."""

from __future__ import annotations

import subprocess
import sys

from dropin.plugins import PluginHost
from dropin.testing import ConformanceModels


def dropin_plugins(**env: str) -> str:
    return subprocess.run(
        [sys.executable, "-m", "dropin", "plugins"], capture_output=True, text=True, check=True,
        env={"PATH": "/usr/bin:/bin", **env},
    ).stdout


def test_dropin_plugins_lists_the_openvino_plugin() -> None:
    out = dropin_plugins()
    assert (
        "openvino (dropin-openvino 0.1.0)\n  module: dropin_openvino.plugin\n"
        "  hooks: dropin_configure, dropin_declare_vocabulary, dropin_register_backends, "
        "dropin_register_conformance_models\n"
        "  server options: --cache_dir, --cpu_extension\n"
        "  backends: openvino\n  conformance models: openvino\n"
    ) in out
    assert out.endswith("backend claim order (priority): openvino (100), onnxruntime (50), numpy (0)\n")


def test_blocking_openvino_leaves_onnxruntime_to_claim_onnx_files() -> None:
    out = dropin_plugins(DROPIN_BLOCK_PLUGINS="openvino")
    assert (
        "openvino (dropin-openvino 0.1.0)\n  module: dropin_openvino.plugin\n  error: blocked by DROPIN_BLOCK_PLUGINS\n"
    ) in out
    assert out.endswith("backend claim order (priority): onnxruntime (50), numpy (0)\n")


def test_openvino_claims_first_among_installed_backends() -> None:
    host = PluginHost(blocked=set())
    host.load()
    names = host.registries().backends.names()
    assert names.index("openvino") == 0, names


def test_openvino_registers_its_conformance_models() -> None:
    host = PluginHost(blocked=set())
    host.load()
    provider = host.conformance_models().get("openvino")
    assert issubclass(provider, ConformanceModels) and provider.plugin_config


def test_allow_list_loads_only_the_named_plugins() -> None:
    out = dropin_plugins(DROPIN_ALLOW_PLUGINS="image")
    assert "openvino (dropin-openvino" in out and "error: blocked by DROPIN_ALLOW_PLUGINS" in out
    assert "backends: openvino" not in out and "preprocessors: image" in out
    assert "builtin (dropin" in out and "sources: local" in out  # the core's own plugin always loads
