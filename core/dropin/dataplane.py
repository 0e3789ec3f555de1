"""The protocol-neutral data plane: Predict, GetModelMetadata and GetModelStatus.

Each front end (gRPC, REST) handles a request the same way: it opens a `RequestScope`, resolves
the model version, decodes its wire format into `RequestTensor`s, has the scope infer, and encodes
what it returns (TF Serving's messages: tfs_messages.py). The scope records the request's outcome
in the metrics when it closes. Errors are raised as `DropinError`.
"""

from __future__ import annotations

import math
from concurrent.futures import ThreadPoolExecutor

import numpy as np

from .manager import ModelManager
from .metrics import Metrics
from .models import ModelVersion, versions
from .request_scope import RequestScope
from .reshape import Reshaper
from .sequences import IdleSequenceCleaner
from .validation import Conversion, convert_inputs


class DataPlane:
    def __init__(
        self,
        manager: ModelManager,
        max_elements: int = 0,
        preprocess_threads: int | None = None,
        max_tensor_bytes: int = 0,
        metrics: Metrics | None = None,
        sequence_cleaner_poll_wait_minutes: float = 5.0,
    ) -> None:
        self.manager = manager
        self.table = manager.table
        self.max_elements = max_elements
        self.max_tensor_bytes = max_tensor_bytes  # no input may be larger than a client could send (0: no limit)
        # what an ExactPlan must fit to be used (RequestScope.exact_plan): the same limits, compared
        # without a call per request
        self.exact_limits = (max_elements or math.inf, max_tensor_bytes or math.inf)
        self.metrics = metrics  # None: metrics off, no metric work per request
        self.reshaper = Reshaper(manager.loader, manager.table)  # batch_size / shape "auto"
        # preprocessors that decode (images) run here, off the event loop
        self._executor = ThreadPoolExecutor(preprocess_threads, thread_name_prefix="dropin-preprocess")
        self.sequence_cleaner = IdleSequenceCleaner(self.table, sequence_cleaner_poll_wait_minutes)
        if metrics is not None:
            metrics.sequences = self.sequence_cleaner.tables

    async def _convert(self, conversions: list[Conversion], arrays: dict[str, np.ndarray]) -> None:
        await convert_inputs(conversions, arrays, self._executor)

    def request(self, interface: int, method: int) -> RequestScope:
        """The scope of one request on a front end (`interface`: GRPC or REST; `method`: PREDICT,
        METADATA or STATUS): use it as `with dataplane.request(...) as scope:`."""
        return RequestScope(self, self.metrics.probe(interface, method) if self.metrics is not None else None)

    def status(self, model_name: str, version: int) -> list[ModelVersion]:
        """One version, or (version 0) every registered version in ascending order; not counted
        in the metrics (GET /v1/config)."""
        return versions(self.table.get(model_name), version)

    def close(self) -> None:
        self.sequence_cleaner.close()
        self._executor.shutdown(wait=False, cancel_futures=True)


