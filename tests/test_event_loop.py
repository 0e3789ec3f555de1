"""The event loop option: uvloop by default where installed, asyncio's loop on request, the same
answers on both, and a clear start-up error for a loop that is not available."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from pathlib import Path

import grpc
import numpy as np
import pytest

from dropin._proto.tensorflow_serving.apis import prediction_service_pb2_grpc
from dropin.testing import numpy_models as modelgen
from dropin.testing.client import outputs_of, predict_request
from dropin.testing.server import DropinServer


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    base = tmp_path_factory.mktemp("loop") / "scale"
    modelgen.scale_model(base / "1", shape=(-1, 3), factor=2.0, offset=1.0)
    return base


@pytest.mark.parametrize("kind", ["auto", "uvloop", "asyncio"])
def test_each_loop_serves_the_same_answers(model_dir: Path, kind: str) -> None:
    server = DropinServer([
        "--model_name", "scale", "--model_path", str(model_dir), "--event_loop", kind,
    ])
    try:
        server.wait_for("scale", 1)
        expected = "asyncio" if kind == "asyncio" else "uvloop"  # uvloop is a dependency on Linux
        server.wait_for_log(f"event loop: {expected}")
        x = np.arange(12, dtype=np.float32).reshape(4, 3)
        with grpc.insecure_channel(f"127.0.0.1:{server.port}") as channel:
            stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
            for _ in range(20):
                got = outputs_of(stub.Predict(predict_request("scale", {"x": x}), timeout=10))
                np.testing.assert_array_equal(got["y"], modelgen.run_numpy(model_dir / "1", {"x": x})["y"])
    finally:
        server.stop()


def test_uvloop_requested_but_missing_stops_start_up(model_dir: Path, tmp_path: Path) -> None:
    # a module named uvloop that fails to import stands for a machine without it
    (tmp_path / "uvloop.py").write_text("raise ImportError('no uvloop here')\n")
    proc = subprocess.run(
        [sys.executable, "-m", "dropin", "serve", "--port", "0", "--model_name", "scale",
         "--model_path", str(model_dir), "--event_loop", "uvloop"],
        capture_output=True, text=True, timeout=60, env={**os.environ, "PYTHONPATH": str(tmp_path)},
    )
    assert proc.returncode == 2
    assert "--event_loop uvloop: the uvloop package is not installed" in proc.stderr


def test_an_unknown_loop_is_refused_by_the_command_line(model_dir: Path) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "dropin", "serve", "--port", "0", "--model_name", "scale",
         "--model_path", str(model_dir), "--event_loop", "tokio"],
        capture_output=True, text=True, timeout=60,
    )
    assert proc.returncode == 2
    assert "invalid choice: 'tokio'" in proc.stderr


@pytest.mark.parametrize("kind", ["uvloop", "asyncio"])
def test_the_python_3_10_path_runs_and_cleans_up_like_asyncio_runner(kind: str) -> None:
    """Python 3.10 has no asyncio.Runner: `_run_on` does its work (run, cancel leftovers, close)."""
    from dropin.event_loop import _run_on, loop_factory

    left: list[asyncio.Task[None]] = []

    async def main() -> int:
        left.append(asyncio.get_running_loop().create_task(asyncio.sleep(3600)))
        return 42

    loop = (loop_factory(kind) or asyncio.new_event_loop)()
    assert _run_on(main(), loop) == 42
    assert left[0].cancelled() and loop.is_closed()
