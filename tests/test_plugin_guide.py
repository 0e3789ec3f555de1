"""docs/plugins.md works: its complete third-party backend, built from the guide's code blocks
alone, installs as a distribution, is listed by `dropin plugins`, serves a model in the real
server, and passes its own tests and the backend conformance suite."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from dropin.testing import fake_plugins

GUIDE = Path(__file__).resolve().parent.parent / "docs" / "plugins.md"
MARKER = "file"


def guide_files() -> dict[str, str]:
    """The example: each code block right after `<!-- file: path -->`."""
    return fake_plugins.guide_files(GUIDE, MARKER)


@pytest.fixture(scope="module")
def example(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """(the example's source tree, a site directory it is installed in)"""
    src, site, dist = fake_plugins.install_guide_example(GUIDE, MARKER, tmp_path_factory.mktemp("guide"))
    assert dist == "dropin-affine"
    return src, site


def test_the_guide_holds_a_whole_plugin() -> None:
    assert set(guide_files()) == {
        "pyproject.toml",
        "dropin_affine/__init__.py",
        "dropin_affine/backend.py",
        "dropin_affine/testing.py",
        "dropin_affine/plugin.py",
        "models/double/1/affine.json",
        "tests/test_affine.py",
    }


def test_dropin_plugins_lists_it(example: tuple[Path, Path]) -> None:
    _, site = example
    out = subprocess.run(
        [sys.executable, "-m", "dropin", "plugins"], capture_output=True, text=True, check=True,
        env={"PYTHONPATH": str(site), "PATH": "/usr/bin:/bin"},
    ).stdout
    assert (
        "affine (dropin-affine 1.0)\n  module: dropin_affine.plugin\n"
        "  hooks: dropin_register_backends, dropin_register_conformance_models\n"
        "  backends: affine\n  conformance models: affine\n"
    ) in out, out
    # after the backends of higher priority installed (the first-party plugins, when they are)
    assert "backend claim order (priority): " in out and out.endswith("affine (0), numpy (0)\n"), out


def test_the_server_serves_its_model(example: tuple[Path, Path], start_server) -> None:  # type: ignore[no-untyped-def]
    src, site = example
    server = start_server(
        "--model_name", "double", "--model_path", str(src / "models" / "double"), env={"PYTHONPATH": str(site)}
    )
    server.wait_for("double", 1)
    server.wait_for_log(re.escape("model double version 1: AVAILABLE (backend affine)"))
    x = np.array([[1.5, -2.0], [0.25, 8.0]], np.float32)
    np.testing.assert_array_equal(server.client.predict("double", {"x": x})["y"], x * 2)


def test_its_own_tests_and_the_conformance_suite_pass(example: tuple[Path, Path]) -> None:
    src, site = example
    out = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "tests",
         "--dropin-backend=affine", "--pyargs", "dropin.testing.conformance"],
        capture_output=True, text=True, cwd=src, env={"PYTHONPATH": str(site), "PATH": "/usr/bin:/bin"}, timeout=300,
    )
    summary = out.stdout.strip().splitlines()[-1] if out.stdout.strip() else ""
    assert out.returncode == 0, out.stdout[-6000:] + out.stderr[-2000:]
    assert re.match(r"58 passed in ", summary), summary  # its 1 test + the 57 of the suite, none skipped
