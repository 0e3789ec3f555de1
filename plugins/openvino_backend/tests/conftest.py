"""Fixtures of the OpenVINO plugin's in-process tests: the backend, the bundled digits demo model
loaded by it, and the same model run by OpenVINO directly (f32) as the reference."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import numpy as np
import pytest

from dropin.backend import LoadOptions
from dropin_openvino.backend import OpenVINOBackend
from dropin_openvino.modelgen import DIGITS, DIGITS_F32
from dropin_openvino.serving import OpenVINOModel


@pytest.fixture(scope="module")
def backend() -> OpenVINOBackend:
    return OpenVINOBackend()


@pytest.fixture(scope="module")
def expected(backend: OpenVINOBackend) -> Callable[[np.ndarray], dict[str, np.ndarray]]:
    """The digits model run by OpenVINO directly: batch -> {"probabilities", "label"}."""
    direct = backend.core.compile_model(str(DIGITS / "model.xml"), "CPU", DIGITS_F32)

    def run_direct(batch: np.ndarray) -> dict[str, np.ndarray]:
        result = direct(batch)
        return {name: result[direct.output(name)] for name in ("probabilities", "label")}

    return run_direct


@pytest.fixture(scope="module")
def model(backend: OpenVINOBackend) -> Iterator[OpenVINOModel]:
    loaded = backend.load(DIGITS, LoadOptions(plugin_config=DIGITS_F32))
    yield loaded
    loaded.close()
