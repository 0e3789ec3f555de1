"""Run the conformance suite in a fresh pytest process, exactly as a plugin author runs it:
`pytest --dropin-backend=NAME --pyargs dropin.testing.conformance`."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path


def run_suite(
    backend: str, cwd: Path, *extra: str, env: dict[str, str] | None = None
) -> tuple[subprocess.CompletedProcess[str], float]:
    """The finished pytest process (its output captured) and its wall time in seconds."""
    started = time.monotonic()
    out = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-rs", "-p", "no:cacheprovider", f"--dropin-backend={backend}",
         "--pyargs", "dropin.testing.conformance", *extra],
        capture_output=True, text=True, cwd=cwd, env=env, timeout=300,
    )
    return out, time.monotonic() - started
