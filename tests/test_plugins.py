"""The plugin facade: registration hooks, ownership, broken and blocked plugins, `dropin plugins`,
and a third-party plugin installed as an entry point that the real server uses."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from dropin.backend import Backend, LoadedModel, LoadOptions
from dropin.custom_nodes import CustomNode
from dropin.hookspecs import hookimpl
from dropin.plugins import PluginHost
from dropin.preprocess import InputConverter, Preprocessor
from dropin.sources import LocalSource
from dropin.testing import numpy_models as modelgen
from dropin.testing.fake_plugins import install_fake_distribution


class EchoModel(LoadedModel):
    inputs = {}
    outputs = {}

    async def infer(self, inputs):
        return dict(inputs)


class EchoBackend(Backend):
    @classmethod
    def claims(cls, version_dir: Path) -> bool:
        return (version_dir / "echo").exists()

    def load(self, version_dir: Path, options: LoadOptions) -> LoadedModel:
        return EchoModel()


class UpperConverter(InputConverter):
    def convert(self, name, shape, values):
        return np.array([v.upper() for v in values], dtype=object)


class UpperPreprocessor(Preprocessor):
    def claim(self, spec, options):
        return UpperConverter()


class MemorySource(LocalSource):
    @classmethod
    def claims(cls, base_path: str) -> bool:
        return base_path.startswith("memory://")


class NegateNode(CustomNode):
    inputs = {}
    outputs = {}

    def execute(self, inputs):
        return {name: -array for name, array in inputs.items()}


class ThirdParty:
    """An in-process plugin implementing every hook."""

    @hookimpl
    def dropin_register_backends(self, registry):
        registry.add("echo", EchoBackend)

    @hookimpl
    def dropin_register_preprocessors(self, registry):
        registry.add("upper", UpperPreprocessor)

    @hookimpl
    def dropin_register_sources(self, registry):
        registry.add("memory", MemorySource)

    @hookimpl
    def dropin_register_custom_nodes(self, registry):
        registry.add("negate", NegateNode)


def test_registration_hooks_fill_the_registries() -> None:
    host = PluginHost(blocked=set())
    host.register(ThirdParty(), "third_party")
    registries = host.registries()
    assert registries.backends.get("echo") is EchoBackend
    assert registries.preprocessors.get("upper") is UpperPreprocessor
    assert registries.sources.names() == ["local", "memory"]  # built-in first, as registered
    assert registries.sources.owner("memory") == "third_party"
    assert registries.sources.owner("local") == "builtin"
    assert registries.custom_nodes.get("negate") is NegateNode
    assert EchoBackend.name == "echo"
    info = {p.name: p for p in host.plugins()}["third_party"]
    assert info.hooks == [
        "dropin_register_backends", "dropin_register_custom_nodes", "dropin_register_preprocessors",
        "dropin_register_sources",
    ]
    assert info.registered == {
        "backend": ["echo"], "preprocessor": ["upper"], "source": ["memory"], "custom node": ["negate"],
    }


def test_a_plugin_failing_in_a_hook_is_reported_and_skipped() -> None:
    class Broken:
        @hookimpl
        def dropin_register_backends(self, registry):
            raise RuntimeError("boom")

    host = PluginHost(blocked=set())
    host.register(Broken(), "broken")
    host.register(ThirdParty(), "third_party")
    registries = host.registries()
    assert "echo" in registries.backends
    assert "boom" in {p.name: p for p in host.plugins()}["broken"].error


def test_duplicate_names_name_both_plugins() -> None:
    host = PluginHost(blocked=set())
    host.register(ThirdParty(), "one")
    host.register(ThirdParty(), "two")
    host.registries()
    errors = [p.error for p in host.plugins() if p.error]
    assert any("'one'" in e and "'two'" in e for e in errors), errors


def test_registry_refuses_wrong_types() -> None:
    class Wrong:
        @hookimpl
        def dropin_register_sources(self, registry):
            registry.add("nope", dict)

    host = PluginHost(blocked=set())
    host.register(Wrong(), "wrong")
    host.registries()
    assert "subclass of ModelSource" in {p.name: p for p in host.plugins()}["wrong"].error


# -- plugins installed as entry points, used by the real server ---------------------------------

PLUGIN_MODULE = '''
from dropin.hookspecs import hookimpl
from dropin.sources import LocalSource

class AliasSource(LocalSource):
    """Serves alias://<dir> from the local directory <dir>."""

    @classmethod
    def claims(cls, base_path):
        return base_path.startswith("alias://")

    def __init__(self, base_path):
        super().__init__(base_path[len("alias://"):])

@hookimpl
def dropin_register_sources(registry):
    registry.add("alias", AliasSource)
'''


@pytest.fixture
def plugin_site(tmp_path: Path) -> Path:
    site = tmp_path / "site"
    install_fake_distribution(site, "dropin_alias", {"alias": "alias_plugin"}, {"alias_plugin": PLUGIN_MODULE})
    install_fake_distribution(
        site, "dropin_broken", {"broken": "broken_plugin"}, {"broken_plugin": "import no_such_module\n"}
    )
    return site


def test_dropin_plugins_lists_installed_plugins(plugin_site: Path) -> None:
    out = subprocess.run(
        [sys.executable, "-m", "dropin", "plugins"], capture_output=True, text=True, check=True,
        env={"PYTHONPATH": str(plugin_site), "PATH": "/usr/bin:/bin"},
    ).stdout
    assert "alias (dropin_alias 1.0)\n  module: alias_plugin\n  hooks: dropin_register_sources\n  sources: alias" in out
    assert "broken (dropin_broken 1.0)\n  module: broken_plugin\n  error: failed to load: ModuleNotFoundError" in out
    assert (
        "builtin (dropin 0.1.0)\n  module: dropin.builtin\n  hooks: dropin_register_sources\n  sources: local\n" in out
    )
    assert (
        "numpy (dropin 0.1.0)\n  module: dropin.testing.numpy_plugin\n"
        "  hooks: dropin_register_backends, dropin_register_conformance_models, dropin_register_custom_nodes\n"
        "  backends: numpy\n  custom nodes: add_sub, split_rows, sum_rows, thread_name\n  conformance models: numpy\n"
    ) in out
    # the test kit's backend claims last (each backend plugin's tests check its own place)
    assert "backend claim order (priority): " in out and out.endswith("numpy (0)\n")


def test_blocked_plugin_is_not_loaded(plugin_site: Path) -> None:
    out = subprocess.run(
        [sys.executable, "-m", "dropin", "plugins"], capture_output=True, text=True, check=True,
        env={"PYTHONPATH": str(plugin_site), "PATH": "/usr/bin:/bin", "DROPIN_BLOCK_PLUGINS": "alias,broken"},
    ).stdout
    assert "alias (dropin_alias 1.0)\n  module: alias_plugin\n  error: blocked by DROPIN_BLOCK_PLUGINS" in out
    assert "sources: alias" not in out


def test_server_uses_a_third_party_source_and_survives_a_broken_plugin(
    start_server, plugin_site: Path, tmp_path: Path
) -> None:
    modelgen.scale_model(tmp_path / "m" / "1", shape=(-1, 2), factor=7.0)
    server = start_server(
        "--model_name", "m", "--model_path", f"alias://{tmp_path / 'm'}",
        env={"PYTHONPATH": str(plugin_site)},
    )
    server.wait_for("m", 1)
    assert "plugin broken (dropin_broken 1.0) failed to load: ModuleNotFoundError" in server.log
    from dropin.testing.client import outputs_of, predict_request

    response = server.predict.Predict(predict_request("m", {"x": np.ones((1, 2), np.float32)}), timeout=20)
    np.testing.assert_array_equal(outputs_of(response)["y"], [[7.0, 7.0]])


def test_a_plugin_with_a_misspelt_hook_is_refused_whole(tmp_path: Path) -> None:
    site = tmp_path / "site"
    install_fake_distribution(site, "dropin_typo", {"typo": "typo_plugin"}, {"typo_plugin": '''
from dropin.hookspecs import hookimpl
from dropin.sources import LocalSource

class TypoSource(LocalSource):
    @classmethod
    def claims(cls, base_path):
        return base_path.startswith("typo://")

@hookimpl
def dropin_register_source(registry):  # misspelt: not a dropin hook
    pass

@hookimpl
def dropin_register_sources(registry):
    registry.add("typo", TypoSource)
'''})
    out = subprocess.run(
        [sys.executable, "-m", "dropin", "plugins"], capture_output=True, text=True, check=True,
        env={"PYTHONPATH": str(site), "PATH": "/usr/bin:/bin"},
    ).stdout
    assert (
        "typo (dropin_typo 1.0)\n  module: typo_plugin\n  error: failed to load: PluginValidationError: "
        "unknown hook 'dropin_register_source'"
        in out
    )
    assert "sources: typo" not in out  # its correct hooks are not called either
