#!/usr/bin/env python3
"""Set up and run dropin from a fresh clone, with nothing but python3.

    python3 dev.py serve   # create .venv, install dropin and its plugins, serve models/ on port 9000
    python3 dev.py test    # also install the test tools; run ruff, mypy and the whole test suite
    python3 dev.py lint    # ruff and mypy only

Extra arguments go to `dropin serve` or to pytest. Both commands share one .venv: `test`
installs the test tools once, after which switching between the two installs nothing.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import venv
from pathlib import Path

ROOT = Path(__file__).resolve().parent
VENV = ROOT / ".venv"
PYTHON = VENV / "bin" / "python"
PLUGINS = ["plugins/openvino_backend", "plugins/onnxruntime_backend", "plugins/image_preproc", "plugins/s3_source"]
# what was installed: a digest of the pyproject files and the extras, e.g. {"digest": "...", "extras": ["test"]}
STAMP = VENV / ".dropin-installed"


def pip_install(*args: str) -> None:
    subprocess.run([str(PYTHON), "-m", "pip", "install", "--quiet", *args], cwd=ROOT, check=True)


def installed() -> tuple[str, set[str]]:
    try:
        stamp = json.loads(STAMP.read_text())
        return stamp["digest"], set(stamp["extras"])
    except (OSError, ValueError, KeyError, TypeError):
        return "", set()


def install_settings(pyproject: str) -> str:
    """The lines of a pyproject.toml that change what gets installed: all but the [tool.*] tables
    of other tools than setuptools (editing the ruff, mypy or pytest settings installs nothing)."""
    kept, keep = [], True
    for line in pyproject.splitlines(keepends=True):
        if line.startswith("["):
            keep = not line.startswith(("[tool.", "[[tool.")) or line.startswith("[tool.setuptools")
        if keep:
            kept.append(line)
    return "".join(kept)


def setup(extras: set[str]) -> None:
    """Create .venv and install the core and plugins (editable) with `extras`.

    Skipped when the pyproject files are unchanged and `extras` were installed before (`serve`
    after `test`); when only extras are missing (`test` after `serve`), only they are added."""
    if not PYTHON.exists():
        print(f"creating {VENV.relative_to(ROOT)}", flush=True)
        venv.EnvBuilder(with_pip=True).create(VENV)
        pip_install("--upgrade", "pip")
    inputs = [ROOT / "pyproject.toml", *(ROOT / p / "pyproject.toml" for p in PLUGINS)]
    digest = hashlib.sha256("".join(install_settings(p.read_text()) for p in inputs).encode()).hexdigest()
    old_digest, old_extras = installed()
    if digest == old_digest and extras <= old_extras:
        return
    wanted = extras | old_extras  # keep what an earlier command installed, so that neither undoes the other
    core = f".[{','.join(sorted(wanted))}]" if wanted else "."
    if digest == old_digest:
        print(f"installing dropin's {', '.join(sorted(extras - old_extras))} tools into .venv", flush=True)
        pip_install("-e", core)
    else:
        print("installing dropin and its plugins into .venv (a few minutes the first time)", flush=True)
        pip_install("-e", core, *(arg for p in PLUGINS for arg in ("-e", p)))
    STAMP.write_text(json.dumps({"digest": digest, "extras": sorted(wanted)}))


def lint() -> int:
    """ruff and mypy, configured in pyproject.toml; 0 when both pass."""
    failed = 0
    for tool in (["ruff", "check"], ["mypy"]):
        print(f"{' '.join(tool)} ...", flush=True)
        failed |= subprocess.run([str(PYTHON), "-m", *tool], cwd=ROOT).returncode
    return failed


def main(argv: list[str]) -> int:
    if not argv or argv[0] not in ("serve", "test", "lint"):
        print(__doc__)
        return 2
    command, rest = argv[0], argv[1:]
    os.environ.setdefault("PIP_DISABLE_PIP_VERSION_CHECK", "1")
    if command == "serve":
        setup(set())
        args = rest or ["--config_path", "models/config.json", "--port", "9000"]
        os.execv(str(PYTHON), [str(PYTHON), "-m", "dropin", "serve", *args])
    setup({"test"})
    if command == "lint":
        return lint()
    # lint first (seconds), then the tests; the command fails if either does
    linted = lint()
    tested = subprocess.run([str(PYTHON), "-m", "pytest", *rest], cwd=ROOT).returncode
    return tested or linted


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
