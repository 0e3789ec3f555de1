"""Fixtures: a real `dropin serve` process on a temporary model repository, and gRPC stubs.

The server helper and its fixtures are the test kit's (`dropin.testing`, a pytest plugin installed
with dropin); the names below stay importable from here for the tests."""

from __future__ import annotations

from pathlib import Path

import pytest

from dropin.testing.server import DropinServer, free_port  # noqa: F401  (imported from here by tests)

F32_CONFIG = '{"INFERENCE_PRECISION_HINT":"f32"}'
GIB = 1 << 30


@pytest.fixture
def start_server(dropin_server):  # type: ignore[no-untyped-def]
    """Start servers with `start_server(args...)`; all are stopped at the end of the test
    (the test kit's `dropin_server` fixture)."""
    return dropin_server


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    """An empty model repository directory."""
    path = tmp_path / "models"
    path.mkdir()
    return path
