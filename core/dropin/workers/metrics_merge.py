"""/metrics over `--workers N`: a snapshot of one worker's counters as plain JSON, and the sum of
several, so that the worker answering a scrape reports every worker's requests.

Counters, histograms and `ovms_current_requests` add up. `ovms_streams` does not: it is the
streams of one worker's copy of a model (every worker compiles it alike), so the first value seen
is kept. The snapshot walks `ModelMetrics.__slots__`, so a field added to it is carried along
(histograms by their counts and buckets, numbers by value).

Counters must never go down, also when a worker dies: its counts would vanish from the sum and
Prometheus would read a counter reset. So the supervisor remembers what each worker last reported
in a scrape (`WorkerCounters`) and, once a worker has exited, keeps adding those counters (not its
gauges) to every later scrape.
"""

from __future__ import annotations

import copy
from collections.abc import Iterable
from typing import Any

from ..metrics import Histogram, Metrics, ModelMetrics

NOT_SUMMED = frozenset({"streams"})
GAUGES = frozenset({"current_requests", "streams"})  # what a worker that exited leaves behind: not these

Snapshot = dict[str, Any]


def snapshot(metrics: Metrics) -> Snapshot:
    """Every model version's counters, JSON-serializable."""
    return {
        "models": [
            [name, version, {slot: _encode(getattr(m, slot)) for slot in ModelMetrics.__slots__}]
            for (name, version), m in metrics._models.items()
        ],
        "requests": requests_total(metrics),
    }


def requests_total(metrics: Metrics) -> int:
    """Requests counted (successes and failures, every method and interface)."""
    return sum(sum(map(sum, m.success)) + sum(map(sum, m.fail)) for m in metrics._models.values())


def merged(metrics: Metrics, snapshots: Iterable[Snapshot]) -> Metrics:
    """A new Metrics (same families) holding `metrics` plus every snapshot; `metrics` is unchanged."""
    total = Metrics(metrics.families)
    total._models = {key: copy.deepcopy(m) for key, m in metrics._models.items()}
    for snap in snapshots:
        for name, version, fields in snap["models"]:
            key = (name, version)
            model = total._models.get(key)
            if model is None:
                model = total._models[key] = ModelMetrics()
            for slot, value in fields.items():
                if slot in ModelMetrics.__slots__:
                    setattr(model, slot, _add(getattr(model, slot), value, slot in NOT_SUMMED))
    return total


def _encode(value: Any) -> Any:
    if isinstance(value, Histogram):
        encoded: dict[str, Any] = {"counts": value.counts, "sum": value.sum}
        buckets = getattr(value, "buckets", None)
        if buckets is not None:
            encoded["buckets"] = list(buckets)
        return encoded
    if isinstance(value, list):
        return [_encode(v) for v in value]
    return value


def _add(mine: Any, theirs: Any, keep_first: bool) -> Any:
    if theirs is None:
        return mine
    if isinstance(theirs, dict):  # a histogram
        if mine is None:
            mine = Histogram(tuple(theirs["buckets"])) if "buckets" in theirs else Histogram()
        if len(mine.counts) == len(theirs["counts"]):
            mine.counts = [a + b for a, b in zip(mine.counts, theirs["counts"], strict=True)]
            mine.sum += theirs["sum"]
        return mine
    if isinstance(theirs, list):
        return [_add(m, t, keep_first) for m, t in zip(mine, theirs, strict=False)]
    if keep_first:
        return theirs if mine is None else mine
    return (mine or 0) + theirs


def counters_only(snap: Snapshot) -> Snapshot:
    """The snapshot without its gauges (requests in flight, streams)."""
    return {
        "models": [
            [name, version, {k: v for k, v in fields.items() if k not in GAUGES}]
            for name, version, fields in snap["models"]
        ],
        "requests": snap["requests"],
    }


class WorkerCounters:
    """The supervisor's record, per worker process, of the latest snapshot it reported in a scrape,
    and the counters of the workers that exited. A scrape shows a worker's snapshot only once it is
    recorded here (`reported` returns True), and `exited` carries the latest one recorded, so no
    value shown ever goes missing from later sums. Snapshots carry the worker's "pid" and "seq"
    (increasing per worker): one that arrives late, after a newer one, is not recorded over it."""

    def __init__(self) -> None:
        self._latest: dict[int, Snapshot | None] = {}  # pid of a running worker -> its latest snapshot
        self._exited: Metrics | None = None

    def started(self, pid: int) -> None:
        self._latest[pid] = None

    def reported(self, snap: Snapshot) -> bool:
        """Record a snapshot; False if its worker has exited already (its counts are in `exited`)."""
        pid = snap.get("pid")
        if pid not in self._latest:
            return False
        latest = self._latest[pid]
        if latest is None or snap["seq"] > latest["seq"]:
            self._latest[pid] = snap
        return True

    def exited(self, pid: int) -> None:
        """Worker `pid` is gone: its last reported counters stay in the sums from now on."""
        snap = self._latest.pop(pid, None)
        if snap is not None:
            self._exited = merged(self._exited or Metrics(), [counters_only(snap)])

    def exited_snapshot(self) -> Snapshot | None:
        """The summed counters of every worker that exited (None if none had reported any)."""
        return None if self._exited is None else snapshot(self._exited)
