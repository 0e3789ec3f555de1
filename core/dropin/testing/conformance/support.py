"""Helpers of the conformance suite (its fixtures are in conftest.py)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from dropin.dtypes import DType
from dropin.testing.models import ConformanceModels


class Models:
    """Writes each test model once per session (through the backend's `ConformanceModels`) and
    skips the tests that need a model the backend cannot build."""

    def __init__(self, provider: ConformanceModels, root: Path) -> None:
        self.provider = provider
        self.root = root
        self._made: dict[tuple[Any, ...], Path] = {}

    def _make(self, key: tuple[Any, ...], write: Callable[[Path], None]) -> Path:
        if key not in self._made:
            directory = self.root / "-".join(str(k).replace(" ", "") for k in key) / "1"
            directory.mkdir(parents=True)
            try:
                write(directory)
            except NotImplementedError as exc:
                pytest.skip(f"the backend's conformance models cannot build {key}: {exc}")
            self._made[key] = directory
        return self._made[key]

    def scale(self, factor: float = 2.0, shape: tuple[int, ...] = (-1, 2)) -> Path:
        return self._make(("scale", factor, shape), lambda d: self.provider.scale(d, factor, list(shape)))

    def identity(self, dtype: DType, shape: tuple[int, ...] = (-1, 3)) -> Path:
        if dtype not in self.provider.dtypes:
            pytest.skip(f"the backend does not declare {dtype.value} (ConformanceModels.dtypes)")
        return self._make(("identity", dtype.value, shape), lambda d: self.provider.identity(d, dtype, list(shape)))

    def failing(self) -> Path:
        return self._make(("failing",), self.provider.failing)

    def write_into(self, directory: Path, kind: str, **params: Any) -> None:
        """Write a model straight into `directory` (for versions that appear while serving)."""
        # positional calls: a provider may name its parameters as it likes
        if kind == "scale":
            self.provider.scale(directory, params.get("factor", 2.0), list(params.get("shape", (-1, 2))))
        elif kind == "identity":
            self.provider.identity(directory, params["dtype"], list(params.get("shape", (-1, 3))))
        elif kind == "failing":
            self.provider.failing(directory)
        else:
            raise ValueError(f"no conformance model {kind!r}")


def run(coro: Any, timeout: float = 60) -> Any:
    """Run a coroutine on a new event loop, failing (not hanging) after `timeout` seconds."""
    return asyncio.run(asyncio.wait_for(coro, timeout))


# values that exercise each dtype's range: limits, zero, negative zero, inf, nan
def sample(dtype: DType, rows: int, seed: int = 0) -> np.ndarray:
    """A (rows, 3) array of `dtype` with interesting values; rows >= 4 holds the limits."""
    rng = np.random.default_rng(seed)
    if dtype is DType.STRING:
        words = [b"", b"a", "caf\u00e9".encode(), b"two words", "\u6f22\u5b57".encode(), b"x" * 300]
        out = np.empty((rows, 3), dtype=object)
        for i in range(rows * 3):
            out.flat[i] = words[(i + seed) % len(words)]
        return out
    np_type = dtype.numpy
    if dtype is DType.BOOL:
        return rng.integers(0, 2, (rows, 3)).astype(bool)
    if np_type.kind == "f":
        values = rng.standard_normal((rows, 3)).astype(np_type) * np_type.type(100)
        special = np.array(
            [np.inf, -np.inf, np.nan, -0.0, np.finfo(np_type).max, np.finfo(np_type).tiny], dtype=np_type
        )
    else:
        info = np.iinfo(np_type)
        values = rng.integers(info.min, info.max, (rows, 3), dtype=np_type, endpoint=True)
        special = np.array([info.min, info.max, 0, 1, info.max - 1, info.min + 1], dtype=np_type)
    flat = values.reshape(-1)
    n = min(len(special), flat.size)
    flat[:n] = special[:n]
    result: np.ndarray = flat.reshape(rows, 3)
    return result
