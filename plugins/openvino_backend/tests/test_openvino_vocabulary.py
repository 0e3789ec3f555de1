"""The OpenVINO plugin's import is cheap (no OpenVINO, no environment change), and OpenVINO's
telemetry stays off when the server loads the plugin."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path


def test_importing_the_plugin_imports_no_runtime_and_changes_no_environment() -> None:
    code = (
        "import importlib, os, sys\n"
        "before = dict(os.environ)\n"
        "for m in ['dropin_openvino', 'dropin_openvino.plugin']: importlib.import_module(m)\n"
        "print(sorted(set(m.split('.')[0] for m in sys.modules) & {'openvino', 'cv2', 'onnxruntime', 'onnx'}))\n"
        "print(sorted(k for k in set(before) | set(os.environ) if before.get(k) != os.environ.get(k)))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         env={"PATH": "/usr/bin:/bin"})
    assert out.stdout.split("\n")[:2] == ["[]", "[]"], out.stdout + out.stderr


def test_openvino_telemetry_stays_off_when_the_server_loads_the_plugin(tmp_path: Path) -> None:
    code = (
        "import os\n"
        "from dropin.plugins import PluginHost\n"
        "host = PluginHost(allowed={'openvino'}); host.load(); host.vocabulary(); host.configure({})\n"
        "assert 'openvino' in host.registries().backends\n"
        "from openvino_telemetry import Telemetry\n"
        "print(Telemetry().consent, os.environ.get('CI'))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         env={"PATH": "/usr/bin:/bin", "HOME": str(tmp_path)})
    assert out.stdout.split() == ["False", "None"], out.stdout + out.stderr
