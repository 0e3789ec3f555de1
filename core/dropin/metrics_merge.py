"""/metrics over `--workers N`: a snapshot of one worker's counters as plain JSON, and the sum of
several, so that the worker answering a scrape reports every worker's requests.

Counters, histograms and `ovms_current_requests` add up. `ovms_streams` does not: it is the
streams of one worker's copy of a model (every worker compiles it alike), so the first value seen
is kept. The snapshot walks `ModelMetrics.__slots__`, so a field added to it is carried along
(histograms by their counts and buckets, numbers by value).
"""

from __future__ import annotations

import copy
from typing import Any, Iterable

from .metrics import Histogram, Metrics, ModelMetrics

NOT_SUMMED = frozenset({"streams"})

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
            mine = Histogram(tuple(theirs["buckets"])) if "buckets" in theirs else Histogram()  # type: ignore[call-arg]
        if len(mine.counts) == len(theirs["counts"]):
            mine.counts = [a + b for a, b in zip(mine.counts, theirs["counts"])]
            mine.sum += theirs["sum"]
        return mine
    if isinstance(theirs, list):
        return [_add(m, t, keep_first) for m, t in zip(mine, theirs)]
    if keep_first:
        return theirs if mine is None else mine
    return (mine or 0) + theirs
