"""Fixtures: a real `dropin serve` process on a temporary model repository.

The server helper and its fixtures are the test kit's (`dropin.testing`, a pytest plugin installed
with dropin); helpers shared by several test files live there too (`dropin.testing.client`,
`.expect`, `.status`, ...): test files import nothing from each other or from here."""

from __future__ import annotations

from pathlib import Path

import pytest


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
