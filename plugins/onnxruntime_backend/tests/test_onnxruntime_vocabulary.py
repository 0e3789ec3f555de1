"""The ONNX Runtime plugin's import is cheap: no ONNX Runtime, no onnx, no environment change."""

from __future__ import annotations

import subprocess
import sys


def test_importing_the_plugin_imports_no_runtime_and_changes_no_environment() -> None:
    code = (
        "import importlib, os, sys\n"
        "before = dict(os.environ)\n"
        "for m in ['dropin_onnxruntime', 'dropin_onnxruntime.plugin']: importlib.import_module(m)\n"
        "print(sorted(set(m.split('.')[0] for m in sys.modules) & {'openvino', 'cv2', 'onnxruntime', 'onnx'}))\n"
        "print(sorted(k for k in set(before) | set(os.environ) if before.get(k) != os.environ.get(k)))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         env={"PATH": "/usr/bin:/bin"})
    assert out.stdout.split("\n")[:2] == ["[]", "[]"], out.stdout + out.stderr
