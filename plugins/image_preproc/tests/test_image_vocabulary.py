"""The image plugin's vocabulary: its flags, config.json keys and errors as `dropin serve --help`
and `dropin plugins` show them, its keys unknown while it is blocked, its import cheap, and
DROPIN_IMAGE_MAX_PIXELS read when the server starts, not on import."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest


def run_dropin(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "dropin", *args], capture_output=True, text=True, timeout=120,
        env={"PATH": "/usr/bin:/bin", **(env or {})},
    )


@pytest.fixture
def model(tmp_path: Path) -> Path:
    (tmp_path / "m" / "1").mkdir(parents=True)
    return tmp_path / "m"


def test_help_and_dropin_plugins_show_what_the_image_plugin_declared() -> None:
    assert "--color_format BGR|RGB|GRAY" in run_dropin("serve", "--help").stdout
    out = run_dropin("plugins").stdout
    assert (
        "image (dropin-image 0.1.0)\n  module: dropin_image.plugin\n"
        "  hooks: dropin_configure, dropin_declare_vocabulary, dropin_register_custom_nodes, "
        "dropin_register_preprocessors\n"
        "  model keys: color_format (--color_format), mean (--mean), scale (--scale), max_pixels\n"
        "  errors: IMAGE_PARSING_FAILED (INVALID_ARGUMENT, 400), INVALID_NO_OF_CHANNELS (INVALID_ARGUMENT, 400), "
        "BINARY_IMAGES_RESOLUTION_MISMATCH (INVALID_ARGUMENT, 400)\n  preprocessors: image\n"
        "  custom nodes: model_zoo_intel_object_detection\n"
    ) in out


def test_its_keys_are_known_while_it_is_installed_and_unknown_when_blocked(model: Path, tmp_path: Path) -> None:
    config = tmp_path / "config.json"
    config.write_text(json.dumps({"model_config_list": [{"config": {"name": "m", "base_path": str(model),
                                                                    "max_pixels": 100}}]}))
    out = run_dropin("serve", "--config_path", str(config), "--port", "0", env={"DROPIN_BLOCK_PLUGINS": "image"})
    assert out.returncode == 2 and "unknown key(s) max_pixels" in out.stderr, out.stderr


def test_importing_the_plugin_imports_no_runtime_and_changes_no_environment() -> None:
    code = (
        "import importlib, os, sys\n"
        "before = dict(os.environ)\n"
        "for m in ['dropin_image', 'dropin_image.plugin']: importlib.import_module(m)\n"
        "print(sorted(set(m.split('.')[0] for m in sys.modules) & {'openvino', 'cv2', 'onnxruntime', 'onnx'}))\n"
        "print(sorted(k for k in set(before) | set(os.environ) if before.get(k) != os.environ.get(k)))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         env={"PATH": "/usr/bin:/bin", "DROPIN_IMAGE_MAX_PIXELS": "lots"})
    assert out.stdout.split("\n")[:2] == ["[]", "[]"], out.stdout + out.stderr


def test_image_pixel_limit_is_read_when_the_server_starts(model: Path) -> None:
    """DROPIN_IMAGE_MAX_PIXELS is read by the image plugin's dropin_configure, not on import: a bad
    value refuses to start, naming the plugin; a good one is the server's limit and OpenCV's guard."""
    out = run_dropin("serve", "--model_name", "m", "--model_path", str(model), "--port", "0",
                     env={"DROPIN_IMAGE_MAX_PIXELS": "lots"})
    assert out.returncode == 2, out.stderr
    assert ("Invalid configuration - plugin image: DROPIN_IMAGE_MAX_PIXELS must be a positive number of pixels, "
            "got 'lots'") in out.stderr
    code = (
        "import os\n"
        "from dropin.plugins import PluginHost\n"
        "host = PluginHost(allowed={'image'}); host.load(); host.configure({})\n"
        "from dropin_image.preprocessor import ImagePreprocessor\n"
        "print(ImagePreprocessor.server_max_pixels, os.environ['OPENCV_IO_MAX_IMAGE_PIXELS'])\n"
    )
    env = {"PATH": "/usr/bin:/bin", "DROPIN_IMAGE_MAX_PIXELS": "12345"}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True)
    assert out.stdout.split() == ["12345", "12345"]
