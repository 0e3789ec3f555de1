"""The numpy backend: a real dropin backend with no runtime but numpy, so that the core's tests
(and a plugin author's) run without OpenVINO or ONNX Runtime installed.

It claims version directories holding `numpy_model.json` and nothing else (never IR or ONNX
files); the model format and its evaluation are in `numpy_graph`. Inference runs in a pool of
`nireq` threads (default: the usable CPUs), so the event loop never blocks. plugin_config may
set `delay_seconds`, added to every inference.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from time import perf_counter

import numpy as np

from ..backend import Backend, InferOutputs, LoadedModel, LoadOptions, SequenceState
from ..shapes import TensorSpec
from .numpy_graph import (
    GRAPH_FILE,
    OPS,
    Graph,
    ModelFormatError,
    check_rules,
    claims,
    evaluate,
    evaluate_sequence,
    parse_seconds,
    read_graph,
)

#: how long `gate` / `load_gate` wait for their file before giving up
GATE_TIMEOUT_SECONDS = 60.0


def _wait_for(gate: Path, what: str) -> None:
    deadline = time.monotonic() + GATE_TIMEOUT_SECONDS
    while not gate.exists():
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what} gate {gate} did not open within {GATE_TIMEOUT_SECONDS:.0f} s")
        time.sleep(0.01)


def cpu_count() -> int:
    try:
        return len(os.sched_getaffinity(0)) or 1
    except (AttributeError, OSError):
        return os.cpu_count() or 1


class NumpyBackend(Backend):
    """Loads `numpy_model.json` version directories. Claims nothing else (never IR or ONNX)."""

    @classmethod
    def claims(cls, version_dir: Path) -> bool:
        return claims(version_dir)

    def load(self, version_dir: Path, options: LoadOptions) -> NumpyModel:
        if options.target_device.upper() != "CPU":
            raise ValueError(
                f"target_device {options.target_device!r} is not served by the numpy backend (devices: CPU)"
            )
        for key in ("shape", "batch_size"):
            value = getattr(options, key)
            if value is not None and value != "auto":
                raise ValueError(
                    f"{key} {value!r}: the numpy backend cannot reshape models; write the model with the shape it needs"
                )
        delay = 0.0
        for key, value in options.plugin_config.items():
            if key != "delay_seconds":
                raise ValueError(f"plugin_config {key}={value!r}: unknown key (known: delay_seconds)")
            delay = parse_seconds(options.plugin_config, key)
        graph = read_graph(version_dir)
        if graph.load_gate is not None:
            _wait_for(graph.load_gate, "load")
        if graph.load_delay_seconds:
            time.sleep(graph.load_delay_seconds)
        nireq = options.nireq if options.nireq > 0 else cpu_count()
        return NumpyModel(graph, nireq, options.layout, extra_delay=delay, label=str(version_dir))


def _layouts(layout: str | Mapping[str, str] | None, inputs: Mapping[str, TensorSpec]) -> dict[str, str]:
    """The `layout` option as letters per input ("NHWC"); the numpy backend cannot transpose."""
    if layout is None:
        return {}
    if isinstance(layout, str):
        if len(inputs) != 1:
            raise ValueError(
                f"layout {layout!r} is given for the whole model, but it has {len(inputs)} inputs; give it per input"
            )
        layout = {next(iter(inputs)): layout}
    for name, text in layout.items():
        if name not in inputs:
            raise ValueError(
                f"layout is given for {name!r}, which is not an input of the model (inputs: {', '.join(inputs)})"
            )
        if ":" in text:
            raise ValueError(f"layout {text!r}: the numpy backend cannot transpose inputs; give the model's own layout")
        if len(text) != inputs[name].rank:
            raise ValueError(f"layout {text!r} does not fit input {name!r} of rank {inputs[name].rank}")
    return {name: text.upper() for name, text in layout.items()}


class NumpyModel(LoadedModel):
    """A numpy graph and a pool of `nireq` threads that evaluate it (a graph with `variables`
    also as a stateful model: `infer_sequence`)."""

    supports_sequences = True

    def __init__(
        self,
        graph: Graph,
        nireq: int,
        layout: str | Mapping[str, str] | None = None,
        extra_delay: float = 0.0,
        label: str = "",
    ) -> None:
        layouts = _layouts(layout, graph.inputs)
        self._inputs = {
            n: TensorSpec(s.name, s.dtype, s.shape, layouts.get(n, s.layout)) for n, s in graph.inputs.items()
        }
        self.graph = graph
        self.delay = graph.delay_seconds + extra_delay
        self.streams = nireq
        self.label = label
        self._executor: ThreadPoolExecutor | None = ThreadPoolExecutor(nireq, thread_name_prefix="dropin-numpy")

    @property
    def inputs(self) -> Mapping[str, TensorSpec]:
        return self._inputs

    @property
    def outputs(self) -> Mapping[str, TensorSpec]:
        return self.graph.outputs

    def check_inputs(self, inputs: Mapping[str, np.ndarray]) -> None:
        check_rules(self.graph, inputs)

    async def infer(self, inputs: Mapping[str, np.ndarray]) -> Mapping[str, np.ndarray]:
        executor = self._executor
        if executor is None:
            raise RuntimeError(f"model {self.label} is closed")
        if set(inputs) != set(self._inputs):
            raise KeyError(f"the model's inputs are {', '.join(self._inputs)}, got {', '.join(inputs) or 'none'}")
        check_rules(self.graph, inputs)  # also here: check_inputs runs only for batched requests
        return await asyncio.get_running_loop().run_in_executor(executor, self._run, inputs, perf_counter())

    infers_now = True

    def infer_now(self, inputs: Mapping[str, np.ndarray]) -> Mapping[str, np.ndarray]:
        """In the model's own threads too (they bound its concurrency to nireq), waited for here."""
        executor = self._executor
        if executor is None:
            raise RuntimeError(f"model {self.label} is closed")
        if set(inputs) != set(self._inputs):
            raise KeyError(f"the model's inputs are {', '.join(self._inputs)}, got {', '.join(inputs) or 'none'}")
        check_rules(self.graph, inputs)
        return executor.submit(self._run, inputs, perf_counter()).result()

    async def infer_sequence(
        self, inputs: Mapping[str, np.ndarray], state: SequenceState | None, keep_state: bool
    ) -> tuple[Mapping[str, np.ndarray], SequenceState | None]:
        executor = self._executor
        if executor is None:
            raise RuntimeError(f"model {self.label} is closed")
        check_rules(self.graph, inputs)
        outputs, new_state = await asyncio.get_running_loop().run_in_executor(
            executor, self._run_step, inputs, state
        )
        return outputs, new_state if keep_state else None

    infers_sequence_now = True

    def infer_sequence_now(
        self, inputs: Mapping[str, np.ndarray], state: SequenceState | None, keep_state: bool
    ) -> tuple[Mapping[str, np.ndarray], SequenceState | None]:
        """In the model's own threads too, as `infer_now`."""
        executor = self._executor
        if executor is None:
            raise RuntimeError(f"model {self.label} is closed")
        check_rules(self.graph, inputs)
        outputs, new_state = executor.submit(self._run_step, inputs, state).result()
        return outputs, new_state if keep_state else None

    def _run_step(
        self, inputs: Mapping[str, np.ndarray], state: SequenceState | None
    ) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
        if self.graph.gate is not None:
            _wait_for(self.graph.gate, "inference")
        if self.delay:
            time.sleep(self.delay)
        return evaluate_sequence(self.graph, inputs, state)

    def _run(self, inputs: Mapping[str, np.ndarray], submitted: float) -> InferOutputs:
        """Runs in a pool thread; the time queued for a thread is the wait for an infer request."""
        started = perf_counter()
        if self.graph.gate is not None:
            _wait_for(self.graph.gate, "inference")
        if self.delay:
            time.sleep(self.delay)
        outputs = evaluate(self.graph, inputs)
        return InferOutputs(outputs, started - submitted, perf_counter() - started)

    def close(self) -> None:
        """Wait for the requests in flight, then release the threads (the weights go with the graph)."""
        executor, self._executor = self._executor, None
        if executor is not None:
            executor.shutdown(wait=True)


# the format's names, for importers of this module
__all__ = ["GRAPH_FILE", "OPS", "Graph", "ModelFormatError", "NumpyBackend", "NumpyModel", "evaluate", "read_graph"]
