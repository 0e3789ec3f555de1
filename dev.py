#!/usr/bin/env python3
"""Set up and run dropin from a fresh clone, with nothing but python3.

    python3 dev.py serve   # create .venv, install dropin and its plugins, serve models/ on port 9000
    python3 dev.py test    # create .venv, install with test tools, run the whole test suite

Extra arguments go to `dropin serve` or to pytest.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import venv
from pathlib import Path

ROOT = Path(__file__).resolve().parent
VENV = ROOT / ".venv"
PYTHON = VENV / "bin" / "python"
PLUGINS = ["plugins/openvino_backend", "plugins/onnxruntime_backend", "plugins/image_preproc"]
STAMP = VENV / ".dropin-installed"


def run(*cmd: str) -> None:
    print("+", " ".join(cmd), flush=True)
    subprocess.run(cmd, cwd=ROOT, check=True)


def setup(extras: str) -> None:
    """Create .venv and install the core and plugins (editable); skipped when nothing changed."""
    if not PYTHON.exists():
        print(f"creating {VENV}", flush=True)
        venv.EnvBuilder(with_pip=True).create(VENV)
        run(str(PYTHON), "-m", "pip", "install", "--quiet", "--upgrade", "pip")
    inputs = [ROOT / "pyproject.toml", *(ROOT / p / "pyproject.toml" for p in PLUGINS)]
    digest = hashlib.sha256(extras.encode() + b"".join(p.read_bytes() for p in inputs)).hexdigest()
    if STAMP.exists() and STAMP.read_text() == digest:
        return
    packages = [f".[{extras}]" if extras else "."] + PLUGINS
    args = [arg for p in packages for arg in ("-e", p)]
    run(str(PYTHON), "-m", "pip", "install", "--quiet", *args)
    STAMP.write_text(digest)


def main(argv: list[str]) -> int:
    if not argv or argv[0] not in ("serve", "test"):
        print(__doc__)
        return 2
    command, rest = argv[0], argv[1:]
    os.environ.setdefault("PIP_DISABLE_PIP_VERSION_CHECK", "1")
    if command == "serve":
        setup("")
        args = rest or ["--config_path", "models/config.json", "--port", "9000"]
        os.execv(str(PYTHON), [str(PYTHON), "-m", "dropin", "serve", *args])
    setup("test")
    return subprocess.run([str(PYTHON), "-m", "pytest", *rest], cwd=ROOT).returncode


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
