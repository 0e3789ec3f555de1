"""Weights rewritten in place under a served version (`cp other/model.bin m/1/model.bin`,
`truncate -s 0`), on the real server under Predict load: runtimes memory-map weights, and the
server must never read them from the user's files (it used to die of SIGBUS). A rewrite is a
reload like any other change; a broken rewrite leaves the last good files serving, with the reason
in the version's status.

A check any backend that maps its weights runs with its own model: a Gather of rows of a table
whose values live in one weights file, input "ids" (INT32 [-1]), output "emb" (FP32 [-1, WIDTH]).
"""

from __future__ import annotations

import subprocess
import threading
import time
from collections.abc import Callable
from pathlib import Path

import grpc
import numpy as np

from .client import outputs_of, predict_request
from .server import DropinServer
from .status import AVAILABLE, states, wait_until

ROWS, WIDTH = 100_000, 64  # a 26 MB table

#: build(version_dir, seed): writes the Gather model with a table drawn from `seed`, returns the
#: name of the file that holds the table (the one rewritten in place)
Build = Callable[[Path, int], str]
#: reference(version_dir, ids): the rows the model of `version_dir` returns for `ids`, computed
#: without the server
Reference = Callable[[Path, np.ndarray], np.ndarray]


def table(seed: int) -> np.ndarray:
    """The FP32 [ROWS, WIDTH] table of `seed` (what every backend's Gather model holds)."""
    return np.random.default_rng(seed).standard_normal((ROWS, WIDTH)).astype(np.float32)


def check_weights_rewritten_in_place(start_server: Callable[..., DropinServer], tmp_path: Path, build: Build,
                                     extra: tuple[str, ...], reference: Reference) -> None:
    """Serve a Gather model, rewrite its weights file in place under Predict load (other weights,
    then truncated, then the first weights again), and check every answer and status on the way.
    `extra`: more `dropin serve` arguments (e.g. --backend)."""
    from .. import private_copy as private_copy_module

    repo, first, other = tmp_path / "m", tmp_path / "first", tmp_path / "other"
    weights = build(repo / "1", 1)
    build(first, 1)
    build(other, 2)
    assert (other / weights).stat().st_size == (repo / "1" / weights).stat().st_size >= ROWS * WIDTH * 4
    private = tmp_path / "private"
    private.mkdir()
    server = start_server("--model_name", "m", "--model_path", str(repo),
                          "--version_settle_seconds", "0.2", *extra, env={"TMPDIR": str(private)})
    server.wait_for("m", 1)
    ids = np.arange(0, ROWS, 997, dtype=np.int32)
    expected = {"first": reference(first, ids), "other": reference(other, ids)}
    seen: list[str] = []
    failures: list[str] = []
    stop = threading.Event()

    def client() -> None:
        while not stop.is_set():
            try:
                emb = outputs_of(server.predict.Predict(predict_request("m", {"ids": ids}), timeout=20))["emb"]
            except grpc.RpcError as exc:
                failures.append(f"{exc.code()}: {exc.details()}")
                continue
            seen.append(next((name for name, value in expected.items() if np.array_equal(emb, value)), "neither"))

    def serving(name: str) -> bool:
        assert server.proc.poll() is None, f"the server died with {server.proc.returncode}:\n{server.log[-2000:]}"
        count = len(seen)
        wait_until(lambda: len(seen) > count + 2 or stop.is_set() or bool(failures))
        return seen[-1] == name

    thread = threading.Thread(target=client)
    thread.start()
    try:
        wait_until(lambda: len(seen) > 5)
        # same size, other weights, written into the served file
        subprocess.run(["cp", str(other / weights), str(repo / "1" / weights)], check=True)
        wait_until(lambda: serving("other"), message="the rewritten weights were never served")
        assert states(server)[1] == (AVAILABLE, 0, "OK")
        # truncated: the reload fails, the last good files keep serving, the status says why
        subprocess.run(["truncate", "-s", "0", str(repo / "1" / weights)], check=True)
        wait_until(lambda: states(server)[1][1] != 0, message="the failed reload never showed in the status")
        state, code, message = states(server)[1]
        assert state == AVAILABLE and code == 2, states(server)
        assert message.startswith("reload failed, the previously loaded files keep serving: ")
        assert str(repo / "1") in message
        time.sleep(0.5)
        assert serving("other")
        # fixed by another rewrite in place: reloaded, and the status is OK again
        subprocess.run(["cp", str(first / weights), str(repo / "1" / weights)], check=True)
        wait_until(lambda: serving("first"), message="the restored weights were never served")
        assert states(server)[1] == (AVAILABLE, 0, "OK")
    finally:
        stop.set()
        thread.join(30)
    assert server.proc.poll() is None, server.log
    assert failures == [], failures[:5]
    assert "neither" not in seen  # every answer was the old or the new weights, never a mix
    assert len(seen) > 50
    server.wait_for_log("model m version 1: reloaded")
    assert list(private.glob(f"{private_copy_module.PREFIX}*")) == []  # each copy was deleted right after its load
