"""The first-party backends and the test kit's numpy backend pass the backend conformance suite,
run exactly as a plugin author runs it: `pytest --dropin-backend=NAME --pyargs
dropin.testing.conformance`, in a fresh process."""

from __future__ import annotations

import re
import subprocess
import sys
import time
from pathlib import Path

import pytest

# tests a backend may skip, by backend: each says why in its ConformanceModels
EXPECTED_SKIPS = {
    "openvino": 6,  # I64, U64, FP64 x (in-process, server): the CPU plugin computes them in 32 bits
    "onnxruntime": 0,
    "numpy": 0,
}


def run_suite(backend: str, cwd: Path, *extra: str, env: dict[str, str] | None = None) -> tuple[subprocess.CompletedProcess[str], float]:
    started = time.monotonic()
    out = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-rs", "-p", "no:cacheprovider", f"--dropin-backend={backend}",
         "--pyargs", "dropin.testing.conformance", *extra],
        capture_output=True, text=True, cwd=cwd, env=env, timeout=300,
    )
    return out, time.monotonic() - started


@pytest.mark.parametrize("backend", sorted(EXPECTED_SKIPS))
def test_backend_passes_the_conformance_suite(backend: str, tmp_path: Path) -> None:
    out, seconds = run_suite(backend, tmp_path)
    summary = out.stdout.strip().splitlines()[-1] if out.stdout.strip() else ""
    print(f"conformance suite, backend {backend}: {summary} ({seconds:.1f} s wall, with interpreter start)")
    assert out.returncode == 0, out.stdout[-6000:] + out.stderr[-2000:]
    passed = int(re.search(r"(\d+) passed", summary).group(1))  # type: ignore[union-attr]
    skipped = re.search(r"(\d+) skipped", summary)
    assert passed >= 50 and (int(skipped.group(1)) if skipped else 0) == EXPECTED_SKIPS[backend], summary
