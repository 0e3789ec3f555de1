"""The OpenVINO backend passes the backend conformance suite, run exactly as a plugin author runs
it: `pytest --dropin-backend=openvino --pyargs dropin.testing.conformance`, in a fresh process."""

from __future__ import annotations

import re
from pathlib import Path

from dropin.testing.conformance.run import run_suite

# I64, U64, FP64 x (in-process, server): the CPU plugin computes them in 32 bits (its
# ConformanceModels says why)
EXPECTED_SKIPS = 6


def test_backend_passes_the_conformance_suite(tmp_path: Path) -> None:
    out, seconds = run_suite("openvino", tmp_path)
    summary = out.stdout.strip().splitlines()[-1] if out.stdout.strip() else ""
    print(f"conformance suite, backend openvino: {summary} ({seconds:.1f} s wall, with interpreter start)")
    assert out.returncode == 0, out.stdout[-6000:] + out.stderr[-2000:]
    passed = int(re.search(r"(\d+) passed", summary).group(1))  # type: ignore[union-attr]
    skipped = re.search(r"(\d+) skipped", summary)
    assert passed >= 50 and (int(skipped.group(1)) if skipped else 0) == EXPECTED_SKIPS, summary
