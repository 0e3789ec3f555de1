"""Fixtures of the conformance suite: the backend under test and its test models."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from dropin.backend import Backend, LoadedModel, LoadOptions
from dropin.testing.models import ConformanceModels

from .support import Models


@pytest.fixture(scope="session")
def conformance_models(
    dropin_conformance_models: ConformanceModels, tmp_path_factory: pytest.TempPathFactory
) -> Models:
    return Models(dropin_conformance_models, tmp_path_factory.mktemp("conformance-models"))


@pytest.fixture(scope="session")
def backend_class(dropin_backend_name: str, dropin_conformance_models: ConformanceModels) -> type[Backend]:
    """The backend class under test (`dropin_conformance_models` has checked that it exists)."""
    from dropin.plugins import PluginHost

    host = PluginHost()
    host.load()
    return host.registries().backends.get(dropin_backend_name)


@pytest.fixture(scope="session")
def backend(backend_class: type[Backend]) -> Backend:
    """One backend instance for the session, as the server makes one per process."""
    return backend_class()


@pytest.fixture(scope="session")
def load_options(dropin_conformance_models: ConformanceModels) -> LoadOptions:
    return LoadOptions(plugin_config=dict(dropin_conformance_models.plugin_config))


@pytest.fixture
def load(backend: Backend, load_options: LoadOptions) -> Iterator[Callable[[Path], LoadedModel]]:
    """`load(version_dir)`: the backend's LoadedModel, closed after the test (if still open)."""
    loaded: list[LoadedModel] = []

    def do_load(version_dir: Path, **options: Any) -> LoadedModel:
        opts = LoadOptions(**{**load_options.__dict__, **options}) if options else load_options
        model = backend.load(version_dir, opts)
        loaded.append(model)
        return model

    yield do_load
    for model in loaded:
        model.close()
