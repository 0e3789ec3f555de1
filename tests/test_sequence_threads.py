"""Sequences served from several threads at once: a gRPC handler thread runs a stateful model's
request itself (`infer_sequence_now`) while REST requests of the same sequences run on the event
loop; the sequence table and each sequence's lock are shared by both. On a real server (the
running-sum numpy model, answers compared with the graph run over the whole sequence), and the
table alone under many threads (its limit and its per-sequence order)."""

from __future__ import annotations

import threading
import time
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np

from dropin.errors import DropinError, Status
from dropin.sequences import SEQUENCE_END, SEQUENCE_START, SequenceTable
from dropin.stateful_config import StatefulSettings
from dropin.testing.client import outputs_of, predict_request
from dropin.testing.numpy_models import run_numpy_sequence, running_sum_model
from dropin.testing.sequences import END, START, sequence_id_of, special, special_json
from dropin.testing.server import DropinServer, free_port


def test_grpc_and_rest_requests_of_the_same_sequences_from_eight_threads(start_server, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    running_sum_model(tmp_path / "sum" / "1", delay_seconds=0.002)
    server: DropinServer = start_server(*["--model_name", "sum", "--model_path", str(tmp_path / "sum"),
                                          "--stateful", "--nireq", "4", "--rest_port", str(free_port())])
    server.wait_for("sum", 1)
    assert server.rest is not None
    rng = np.random.default_rng(7)
    xs = {k: [rng.standard_normal((1, 2)).astype(np.float32) for _ in range(12)] for k in range(8)}

    def one(k: int) -> list[np.ndarray]:
        ys = []
        for i, x in enumerate(xs[k]):
            control = START if i == 0 else END if i == len(xs[k]) - 1 else None
            if (i + k) % 3:  # gRPC: in the handler thread
                response = server.predict.Predict(predict_request("sum", {"x": x, **special(500 + k, control)}),
                                                  timeout=30)
                assert sequence_id_of(response) == 500 + k
                ys.append(outputs_of(response)["y"])
            else:  # REST: on the event loop
                out = server.rest.predict("sum", {"x": x, **special_json(500 + k, control)})  # type: ignore[union-attr]
                assert out["sequence_id"].tolist() == [500 + k]
                ys.append(out["y"])
        return ys

    for _ in range(2):  # twice: the ids are free again once ended
        with ThreadPoolExecutor(8) as pool:
            results = list(pool.map(one, range(8)))
        for k in range(8):
            expected = [r["y"] for r in run_numpy_sequence(tmp_path / "sum" / "1", [{"x": x} for x in xs[k]])]
            np.testing.assert_allclose(results[k], expected, rtol=1e-6)


class CountingModel:
    """A model whose sequence steps record how many of them run at once and in which order."""

    infers_sequence_now = True

    def __init__(self) -> None:
        self.running = 0
        self.most = 0
        self.seen: list[int] = []
        self._lock = threading.Lock()

    def infer_sequence_now(
        self, inputs: Mapping[str, np.ndarray], state: Mapping[str, np.ndarray] | None, keep_state: bool
    ) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray] | None]:
        with self._lock:
            self.running += 1
            self.most = max(self.most, self.running)
        time.sleep(0.001)
        count = (0 if state is None else int(state["n"][0])) + 1
        with self._lock:
            self.running -= 1
            self.seen.append(count)
        return {"n": np.array([count])}, {"n": np.array([count])} if keep_state else None


def test_the_table_from_many_threads() -> None:
    table = SequenceTable("m", 1, StatefulSettings(max_sequence_number=8), {})
    with ThreadPoolExecutor(16) as pool:
        outcomes = list(pool.map(lambda k: _start(table, 100 + k), range(16)))
    assert outcomes.count("started") == 8 and outcomes.count(Status.MAX_SEQUENCE_NUMBER_REACHED) == 8
    assert len(table) == 8
    # 40 requests of one sequence from 8 threads: one at a time, each from the state of the one before
    model: Any = CountingModel()
    sequence_id = next(iter(table.sequences))
    with ThreadPoolExecutor(8) as pool:
        list(pool.map(lambda _: table.infer_now(model, table.open(sequence_id, 0), 0, {}), range(40)))
    assert model.most == 1 and sorted(model.seen) == model.seen == list(range(2, 42))
    table.infer_now(model, table.open(sequence_id, SEQUENCE_END), SEQUENCE_END, {})
    assert len(table) == 7 and sequence_id not in table.sequences
    assert table.sweep() == 0 and table.sweep() == 7  # idle twice: removed


def _start(table: SequenceTable, sequence_id: int) -> str | Status:
    """A start request: its sequence opened, then its step run."""
    try:
        sequence = table.open(sequence_id, SEQUENCE_START)
    except DropinError as exc:
        return exc.status
    table.infer_now(CountingModel(), sequence, SEQUENCE_START, {})  # type: ignore[arg-type]
    return "started"
