"""The ONNX Runtime plugin as `dropin plugins` shows it."""

from __future__ import annotations

import subprocess
import sys


def test_dropin_plugins_lists_the_onnxruntime_plugin() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "dropin", "plugins"], capture_output=True, text=True, check=True,
        env={"PATH": "/usr/bin:/bin"},
    ).stdout
    assert "onnxruntime (dropin-onnxruntime 0.1.0)\n  module: dropin_onnxruntime.plugin\n" in out
