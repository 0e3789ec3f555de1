"""OVMS's Prometheus metrics: `GET /metrics` on the REST port with --metrics_enable.

Family names, labels and histogram buckets are OVMS's, so existing dashboards keep working.
Counting is cheap: each (model, version) gets one `ModelMetrics` holding plain counters and
histograms, looked up once per request; requests are counted on the event loop and in gRPC
handler threads, under one uncontended lock (a few updates per request). A collector in a
dedicated `CollectorRegistry` turns them into metric families when /metrics is scraped. When
metrics are off the data plane holds `None` and does no metric work.
"""

from __future__ import annotations

import math
import threading
from bisect import bisect_left
from collections.abc import Callable, Iterable, Iterator, Sequence
from time import perf_counter
from typing import TYPE_CHECKING

from prometheus_client import CollectorRegistry
from prometheus_client.metrics_core import Metric
from prometheus_client.registry import Collector
from prometheus_client.utils import floatToGoString as _untyped_float_to_go_string

from .errors import DropinError, Status

if TYPE_CHECKING:
    from .sequences import SequenceTable

# prometheus_client's number format ("1e+06", "+Inf"); the function is untyped there
_go_float: Callable[[float], str] = _untyped_float_to_go_string

# floor(10 * 1.8^i) microseconds, i = 0..32 (OVMS model_metric_reporter.cpp); +Inf is added
BUCKETS_US: tuple[float, ...] = tuple(float(math.floor(10 * 1.8**i)) for i in range(33))
_LE = tuple(_go_float(b) for b in BUCKETS_US) + ("+Inf",)

API = "TensorFlowServing"
GRPC, REST = 0, 1
INTERFACES = ("gRPC", "REST")
PREDICT, METADATA, STATUS = 0, 1, 2
METHODS = ("Predict", "GetModelMetadata", "GetModelStatus")

SUCCESS = "ovms_requests_success"
FAIL = "ovms_requests_fail"
REQUEST_TIME = "ovms_request_time_us"
INFERENCE_TIME = "ovms_inference_time_us"
WAIT_TIME = "ovms_wait_for_infer_req_time_us"
CURRENT_REQUESTS = "ovms_current_requests"
STREAMS = "ovms_streams"
BATCH_SIZE = "dropin_batch_size"  # dropin's own: batch sizes run by dynamic batching
ACTIVE_SEQUENCES = "dropin_active_sequences"  # dropin's own: open sequences of stateful models
FAMILIES = (
    SUCCESS, FAIL, REQUEST_TIME, INFERENCE_TIME, WAIT_TIME, CURRENT_REQUESTS, STREAMS, BATCH_SIZE, ACTIVE_SEQUENCES
)
# OVMS's optional families: only when --metrics_list (or config.json's metrics_list) names them
INFER_REQ_QUEUE_SIZE = "ovms_infer_req_queue_size"
INFER_REQ_ACTIVE = "ovms_infer_req_active"
OPTIONAL_FAMILIES = (INFER_REQ_QUEUE_SIZE, INFER_REQ_ACTIVE)
BATCH_BUCKETS: tuple[float, ...] = tuple(float(2**i) for i in range(11))  # 1 .. 1024 rows
_BATCH_LE = tuple(_go_float(b) for b in BATCH_BUCKETS) + ("+Inf",)

_HELP = {
    SUCCESS: "Number of successful requests to a model or a DAG.",
    FAIL: "Number of failed requests to a model or a DAG.",
    REQUEST_TIME: "Processing time of requests to a model or a DAG.",
    INFERENCE_TIME: "Inference execution time in the OpenVINO backend.",
    WAIT_TIME: "Request waiting time in the scheduling queue.",
    CURRENT_REQUESTS: "Number of inference requests currently in process.",
    STREAMS: "Number of OpenVINO execution streams.",
    BATCH_SIZE: "Batch sizes (rows) of the inferences run by dynamic batching.",
    ACTIVE_SEQUENCES: "Number of open sequences of a stateful model version.",
    INFER_REQ_QUEUE_SIZE: "Inference request queue size (nireq).",
    INFER_REQ_ACTIVE: "Number of currently consumed inference request from the processing queue.",
}

#: the infer-request pools of the versions served: (name, version, (pool size, requests in use))
Pools = Callable[[], Iterable[tuple[str, int, tuple[int, int]]]]


class Histogram:
    """Counts per bucket (not cumulative; the last one is +Inf) and the sum, in microseconds."""

    __slots__ = ("counts", "sum", "buckets")

    def __init__(self, buckets: tuple[float, ...] = BUCKETS_US) -> None:
        self.counts = [0] * (len(buckets) + 1)
        self.sum = 0.0
        self.buckets = buckets

    def observe(self, us: float) -> None:
        self.counts[bisect_left(self.buckets, us)] += 1
        self.sum += us


class ModelMetrics:
    """What is counted for one model version (or, with version None, for a model's
    GetModelStatus requests, which OVMS labels without a version)."""

    __slots__ = (
        "success", "fail", "request_time", "inference_time", "wait_time", "current_requests", "streams", "batch_size"
    )

    def __init__(self) -> None:
        self.success = [[0] * len(METHODS) for _ in INTERFACES]  # [interface][method]
        self.fail = [[0] * len(METHODS) for _ in INTERFACES]
        self.request_time = [Histogram() for _ in INTERFACES]
        self.inference_time = Histogram()
        self.wait_time = Histogram()
        self.current_requests = 0
        self.streams: int | None = None
        self.batch_size: Histogram | None = None  # made by the first batch of dynamic batching

    def observe_inference(self, outputs: object, seconds: float) -> None:
        """After a backend's infer(): its own timings if it reports them (see
        `dropin.backend.InferOutputs`), else the time the call took, all of it inference."""
        infer = getattr(outputs, "infer_seconds", None)
        if infer is None:
            self.inference_time.observe(seconds * 1e6)
            self.wait_time.observe(0.0)
        else:
            self.inference_time.observe(infer * 1e6)
            self.wait_time.observe(getattr(outputs, "wait_seconds", 0.0) * 1e6)
            # dynamic batching (batching.BatchedOutputs): the requests of a batch share its
            # BatchRun; the first of them to be counted counts the batch
            run = getattr(outputs, "batch_run", None)
            if run is not None and not run.counted:
                run.counted = True
                if self.batch_size is None:
                    self.batch_size = Histogram(BATCH_BUCKETS)
                self.batch_size.observe(run.size)


class RequestProbe:
    """One request being measured: started when the data plane opens its request scope, told
    which model version serves it, and done (success or failure) when the scope closes. A
    request whose model was never resolved (unknown name or version) is not counted, as in OVMS.
    Its updates hold the metrics' lock: requests are counted from gRPC handler threads and from
    the event loop alike."""

    __slots__ = ("_metrics", "interface", "method", "started", "model", "in_flight")

    def __init__(self, metrics: Metrics, interface: int, method: int) -> None:
        self._metrics = metrics
        self.interface = interface
        self.method = method
        self.started = perf_counter()
        self.model: ModelMetrics | None = None
        self.in_flight = False  # counted in ovms_current_requests

    def served(self, name: str, version: int | None, streams: int | None = None) -> ModelMetrics:
        self.model = model = self._metrics.model(name, version, streams)
        return model

    def predicting(self, name: str, version: int, streams: int | None) -> None:
        """A Predict's version is known: counted from now on, and in ovms_current_requests until done."""
        model = self.served(name, version, streams)
        with self._metrics.lock:
            model.current_requests += 1
        self.in_flight = True

    def inferred(self, outputs: object, seconds: float) -> None:
        if self.model is not None:
            with self._metrics.lock:
                self.model.observe_inference(outputs, seconds)

    def done(self, ok: bool) -> None:
        model = self.model
        if model is None:
            return
        with self._metrics.lock:
            if self.in_flight:
                model.current_requests -= 1
            if ok:
                model.success[self.interface][self.method] += 1
                if self.method == PREDICT:
                    model.request_time[self.interface].observe((perf_counter() - self.started) * 1e6)
            else:
                model.fail[self.interface][self.method] += 1


class Metrics(Collector):
    """All metrics of one server, in their own registry."""

    def __init__(self, families: Iterable[str] = FAMILIES, pools: Pools | None = None) -> None:
        families = list(families)
        known = FAMILIES + OPTIONAL_FAMILIES
        unknown = [f for f in families if f not in known]
        if unknown:
            raise DropinError(
                Status.INVALID_METRICS_FAMILY_NAME, f"{', '.join(unknown)}; known families: {', '.join(known)}"
            )
        self.families = frozenset(families)
        #: read only when /metrics is scraped and an optional family is wanted: no per-request cost
        self.pools = pools
        #: the sequence tables of stateful versions (the data plane sets it), read when scraped
        self.sequences: Callable[[], Iterable[SequenceTable]] | None = None
        self._models: dict[tuple[str, int | None], ModelMetrics] = {}  # replaced, never changed: see model()
        self.lock = threading.Lock()  # held by every update of the counters
        self.registry = CollectorRegistry(auto_describe=False)
        self.registry.register(self)

    def probe(self, interface: int, method: int) -> RequestProbe:
        return RequestProbe(self, interface, method)

    def model(self, name: str, version: int | None, streams: int | None = None) -> ModelMetrics:
        key = (name, version)
        model = self._models.get(key)
        if model is None:
            with self.lock:
                model = self._models.get(key)
                if model is None:  # copy on write: a scrape iterating the old dict never sees it change
                    model = ModelMetrics()
                    self._models = {**self._models, key: model}
        if streams is not None:
            model.streams = streams
        return model

    # -- exposition --------------------------------------------------------------------------

    def collect(self) -> Iterator[Metric]:
        wanted = self.families
        counters = {f: Metric(f, _HELP[f], "counter") for f in (SUCCESS, FAIL)}
        histograms = {f: Metric(f, _HELP[f], "histogram") for f in (REQUEST_TIME, INFERENCE_TIME, WAIT_TIME)}
        gauges = {f: Metric(f, _HELP[f], "gauge") for f in (CURRENT_REQUESTS, STREAMS)}
        histograms[BATCH_SIZE] = Metric(BATCH_SIZE, _HELP[BATCH_SIZE], "histogram")
        for (name, version), m in sorted(self._models.items(), key=lambda kv: (kv[0][0], kv[0][1] or 0)):
            methods: Sequence[int] = (STATUS,) if version is None else (PREDICT, METADATA)
            for i, interface in enumerate(INTERFACES):
                for j in methods:
                    labels = {"api": API, "interface": interface, "method": METHODS[j], "name": name}
                    if version is not None:
                        labels["version"] = str(version)
                    counters[SUCCESS].add_sample(SUCCESS, labels, m.success[i][j])
                    counters[FAIL].add_sample(FAIL, labels, m.fail[i][j])
            if version is None:
                continue
            labels = {"name": name, "version": str(version)}
            for i, interface in enumerate(INTERFACES):
                _add_histogram(histograms[REQUEST_TIME], {"interface": interface, **labels}, m.request_time[i])
            _add_histogram(histograms[INFERENCE_TIME], labels, m.inference_time)
            _add_histogram(histograms[WAIT_TIME], labels, m.wait_time)
            gauges[CURRENT_REQUESTS].add_sample(CURRENT_REQUESTS, labels, m.current_requests)
            if m.streams is not None:
                gauges[STREAMS].add_sample(STREAMS, labels, m.streams)
            if m.batch_size is not None:
                _add_histogram(histograms[BATCH_SIZE], labels, m.batch_size, _BATCH_LE)
        for family in (*counters.values(), *histograms.values(), *gauges.values()):
            if family.name in wanted:
                yield family
        if self.pools is not None and not wanted.isdisjoint(OPTIONAL_FAMILIES):
            yield from self._pool_families()
        if self.sequences is not None and ACTIVE_SEQUENCES in wanted:
            active = Metric(ACTIVE_SEQUENCES, _HELP[ACTIVE_SEQUENCES], "gauge")
            for table in sorted(self.sequences(), key=lambda t: (t.model_name, t.version)):
                labels = {"name": table.model_name, "version": str(table.version)}
                active.add_sample(ACTIVE_SEQUENCES, labels, len(table))
            yield active

    def _pool_families(self) -> Iterator[Metric]:
        size = Metric(INFER_REQ_QUEUE_SIZE, _HELP[INFER_REQ_QUEUE_SIZE], "gauge")
        active = Metric(INFER_REQ_ACTIVE, _HELP[INFER_REQ_ACTIVE], "gauge")
        for name, version, (pool, in_use) in sorted(self.pools() if self.pools is not None else ()):
            labels = {"name": name, "version": str(version)}
            size.add_sample(INFER_REQ_QUEUE_SIZE, labels, pool)
            active.add_sample(INFER_REQ_ACTIVE, labels, in_use)
        yield from (family for family in (size, active) if family.name in self.families)

    def render(self) -> bytes:
        """The Prometheus text format (0.0.4) as OVMS writes it: counters are named without the
        `_total` suffix that prometheus_client's generate_latest would add."""
        out: list[str] = []
        for metric in self.registry.collect():
            out.append(f"# HELP {metric.name} {metric.documentation}\n# TYPE {metric.name} {metric.type}\n")
            for sample in metric.samples:
                labels = ",".join(f'{k}="{_escape(v)}"' for k, v in sample.labels.items())
                out.append(f"{sample.name}{{{labels}}} " if labels else f"{sample.name} ")
                v = sample.value
                out.append(f"{v if isinstance(v, int) else _go_float(v)}\n")
        return "".join(out).encode()


CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


def _add_histogram(family: Metric, labels: dict[str, str], histogram: Histogram, les: tuple[str, ...] = _LE) -> None:
    name = family.name
    total = 0
    for le, count in zip(les, histogram.counts, strict=True):
        total += count
        family.add_sample(f"{name}_bucket", {**labels, "le": le}, total)
    family.add_sample(f"{name}_sum", labels, histogram.sum)
    family.add_sample(f"{name}_count", labels, total)


def _escape(value: str) -> str:
    return value.replace("\\", r"\\").replace("\n", r"\n").replace('"', r"\"")
