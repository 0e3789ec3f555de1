"""The protocol-neutral data plane: Predict, GetModelMetadata and GetModelStatus.

The gRPC servicers (and the REST handlers) decode their wire format into `RequestTensor`s,
call these methods, and encode what they return. Errors are raised as `DropinError`.
"""

from __future__ import annotations

import asyncio
import logging
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from time import perf_counter
from typing import Awaitable, Callable, Mapping, NamedTuple, Sequence

import numpy as np

from .errors import DropinError, Status
from .manager import ModelManager
from .metrics import RequestProbe
from .models import ModelVersion, Servable
from .shapes import TensorSpec
from .validation import Conversion, RequestTensor, check_converted, validate_request

log = logging.getLogger("dropin.dataplane")


# Makes a request's tensors from the model's inputs (by name), once the version is resolved.
InputDecoder = Callable[[Mapping[str, TensorSpec]], Awaitable[Mapping[str, RequestTensor]]]


class PredictResult(NamedTuple):  # a tuple: made for every request, cheaply
    model_name: str
    version: int
    outputs: Mapping[str, np.ndarray]


@dataclass(frozen=True)
class ModelMetadata:
    model_name: str
    version: int
    inputs: Mapping[str, TensorSpec]
    outputs: Mapping[str, TensorSpec]


class DataPlane:
    def __init__(
        self, manager: ModelManager, max_elements: int = 0, preprocess_threads: int | None = None, max_tensor_bytes: int = 0
    ) -> None:
        self.manager = manager
        self.table = manager.table
        self.max_elements = max_elements
        self.max_tensor_bytes = max_tensor_bytes  # no input may be larger than a client could send (0: no limit)
        # preprocessors that decode (images) run here, off the event loop
        self._executor = ThreadPoolExecutor(preprocess_threads, thread_name_prefix="dropin-preprocess")

    async def predict(
        self,
        model_name: str,
        version: int,
        inputs: Mapping[str, RequestTensor] | InputDecoder,
        output_filter: Sequence[str] = (),
        probe: RequestProbe | None = None,
    ) -> PredictResult:
        """Run one request. `inputs` are the request's tensors, or a decoder that makes them once
        the model's inputs are known (REST: JSON numbers take the model input's dtype). `probe`
        (metrics on) learns which version served and times the inference."""
        servable = await self.table.acquire(model_name, version)
        counted = None
        if probe is not None:
            counted = probe.served(servable.model_name, servable.version, getattr(servable.model, "streams", None))
            counted.current_requests += 1
        try:
            if callable(inputs):
                inputs = await inputs(servable.model.inputs)
            arrays, conversions = validate_request(servable.plans, inputs, self.max_elements, self.max_tensor_bytes)
            if conversions:
                await self._convert(conversions, arrays)
            outputs_spec = servable.model.outputs
            for name in output_filter:
                if name not in outputs_spec:
                    raise DropinError(
                        Status.INVALID_OUTPUT_FILTER,
                        f"Expected one of: {', '.join(sorted(outputs_spec))}; Actual: {name}",
                    )
            try:
                if counted is None:
                    outputs = await servable.model.infer(arrays)
                else:
                    started = perf_counter()
                    outputs = await servable.model.infer(arrays)
                    counted.observe_inference(outputs, perf_counter() - started)
            except DropinError:
                raise
            except Exception as exc:
                log.exception("model %s version %d: inference failed", model_name, servable.version)
                raise DropinError(
                    Status.INFERENCE_ERROR, f"backend {servable.backend}: {type(exc).__name__}: {exc}"
                ) from exc
            if output_filter:
                outputs = {name: outputs[name] for name in dict.fromkeys(output_filter)}
            return PredictResult(servable.model_name, servable.version, outputs)
        finally:
            servable.release()
            if counted is not None:
                counted.current_requests -= 1

    async def _convert(self, conversions: list[Conversion], arrays: dict[str, np.ndarray]) -> None:
        loop = asyncio.get_running_loop()
        for conversion in conversions:
            plan = conversion.plan
            converter = plan.converter
            assert converter is not None
            try:
                if converter.blocking:
                    array = await loop.run_in_executor(
                        self._executor, converter.convert, plan.spec.name, conversion.shape, conversion.values
                    )
                else:
                    array = converter.convert(plan.spec.name, conversion.shape, conversion.values)
            except DropinError:
                raise
            except Exception as exc:
                log.exception("preprocessor %s failed on input %s", plan.converter_plugin, plan.spec.name)
                raise DropinError(
                    Status.PLUGIN_ERROR,
                    f"preprocessor {plan.converter_plugin!r} failed on input {plan.spec.name}: {type(exc).__name__}: {exc}",
                ) from exc
            arrays[plan.spec.name] = check_converted(conversion, array)

    async def metadata(self, model_name: str, version: int, probe: RequestProbe | None = None) -> ModelMetadata:
        # metadata is answered only by an AVAILABLE version, without waiting for a load
        servable: Servable = await self.table.acquire(model_name, version, wait=False)
        servable.release()
        if probe is not None:
            probe.served(servable.model_name, servable.version)
        return ModelMetadata(servable.model_name, servable.version, servable.model.inputs, servable.model.outputs)

    def status(self, model_name: str, version: int, probe: RequestProbe | None = None) -> list[ModelVersion]:
        """One version, or (version 0) every registered version in ascending order."""
        model = self.table.get(model_name)
        if probe is not None:
            probe.served(model.name, None)  # OVMS counts status requests per model, without a version
        if version:
            found = model.versions.get(version)
            if found is None:
                raise DropinError(Status.MODEL_VERSION_MISSING)
            return [found]
        return [model.versions[n] for n in sorted(model.versions)]

    def close(self) -> None:
        self._executor.shutdown(wait=False, cancel_futures=True)
