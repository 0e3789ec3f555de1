"""The ONNX Runtime backend: serves `.onnx` version directories with an `InferenceSession`.

Loading (in a worker thread, `OnnxRuntimeBackend.load`): the directory's first `.onnx` file (by
name) is opened with the CPU execution provider and the session options from `plugin_config`.

Serving (`OnnxRuntimeModel.infer`, on the event loop): each request is handed to a pool of
`nireq` threads that call `InferenceSession.run` (thread-safe, and it releases the GIL), and the
coroutine awaits the result, so the event loop never blocks.

Threads: by default `nireq` is the number of CPUs the process may use and each run uses
`cpus // nireq` intra-op threads (1 on a 2-core machine): requests run side by side without
oversubscribing the cores. `nireq 1` gives one request at a time all the cores (lower latency
for a lone client); `{"intra_op_num_threads": N}` in plugin_config sets the threads yourself.
"""

from __future__ import annotations

import asyncio
import os
import re
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from time import perf_counter
from typing import Any

import numpy as np
import onnxruntime as ort

from dropin.backend import Backend, InferOutputs, LoadedModel, LoadOptions
from dropin.dtypes import DType
from dropin.errors import DropinError, Status
from dropin.shapes import Dim, TensorSpec

_DTYPES: dict[str, DType] = {
    "tensor(float)": DType.FP32,
    "tensor(double)": DType.FP64,
    "tensor(float16)": DType.FP16,
    "tensor(int64)": DType.I64,
    "tensor(int32)": DType.I32,
    "tensor(int16)": DType.I16,
    "tensor(int8)": DType.I8,
    "tensor(uint64)": DType.U64,
    "tensor(uint32)": DType.U32,
    "tensor(uint16)": DType.U16,
    "tensor(uint8)": DType.U8,
    "tensor(bool)": DType.BOOL,
    "tensor(string)": DType.STRING,
}

# device names (OVMS's target_device) -> ONNX Runtime execution providers
_DEVICES = {"CPU": "CPUExecutionProvider"}

_OPTIMIZATION = {
    "disable_all": ort.GraphOptimizationLevel.ORT_DISABLE_ALL,
    "basic": ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
    "extended": ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED,
    "all": ort.GraphOptimizationLevel.ORT_ENABLE_ALL,
}
_INT_OPTIONS = ("intra_op_num_threads", "inter_op_num_threads", "log_severity_level")
_BOOL_OPTIONS = ("enable_cpu_mem_arena", "enable_mem_pattern", "enable_mem_reuse", "use_deterministic_compute")
PLUGIN_CONFIG_KEYS = (*_INT_OPTIONS, *_BOOL_OPTIONS, "graph_optimization_level", "execution_mode")


class InferenceError(RuntimeError):
    """ONNX Runtime failed to run a request (its message, without source locations)."""


def find_model_file(version_dir: Path | str) -> Path | None:
    """The version directory's first regular `.onnx` file by name, or None."""
    try:
        files = sorted(p for p in Path(version_dir).iterdir() if p.suffix == ".onnx" and p.is_file())
    except OSError:  # missing, not a directory, unreadable
        return None
    return files[0] if files else None


def ort_message(exc: BaseException) -> str:
    """ONNX Runtime's error text without its error-code prefix and C++ source locations."""
    text = _ORT_PREFIX.sub("", str(exc))
    text = _ORT_SOURCE.sub("", text)
    return " ".join(text.split()) or type(exc).__name__


_ORT_PREFIX = re.compile(r"^\[ONNXRuntimeError\] : \d+ : \w+ : ")
_ORT_SOURCE = re.compile(r"/\S+\.(?:h|hpp|cc|cpp):\d+ (?:\S+\(.*?\) )?")


def cpu_count() -> int:
    try:
        return len(os.sched_getaffinity(0)) or 1
    except (AttributeError, OSError):
        return os.cpu_count() or 1


class OnnxRuntimeBackend(Backend):
    """Loads `.onnx` version directories into ONNX Runtime sessions (CPU)."""

    # Claims after OpenVINO (100): with both installed, .onnx files load with OpenVINO unless a
    # model configuration says "backend": "onnxruntime" (or OpenVINO is blocked or absent).
    priority = 50

    @classmethod
    def claims(cls, version_dir: Path) -> bool:
        return find_model_file(version_dir) is not None

    def load(self, version_dir: Path, options: LoadOptions) -> OnnxRuntimeModel:
        version_dir = Path(version_dir)
        model_file = find_model_file(version_dir)
        if model_file is None:
            raise FileNotFoundError(f"no .onnx file found in {version_dir}")
        provider = _DEVICES.get(options.target_device.upper())
        if provider is None:
            raise ValueError(
                f"target_device {options.target_device!r} is not served by the onnxruntime backend "
                f"(devices: {', '.join(_DEVICES)})"
            )
        for key in ("shape", "batch_size"):
            value = getattr(options, key)
            if value is not None and value != "auto":
                raise ValueError(
                    f"{key} {value!r}: the onnxruntime backend cannot reshape models; "
                    "export the model with the shape it needs (use -1 / a symbolic dim for any size)"
                )
        nireq = options.nireq if options.nireq > 0 else cpu_count()
        session_options = make_session_options(options.plugin_config, nireq)
        try:
            session = ort.InferenceSession(str(model_file), session_options, providers=[provider])
        except Exception as exc:  # onnxruntime raises its own exception types
            raise ValueError(f"ONNX Runtime could not load {model_file.name}: {ort_message(exc)}") from None
        return OnnxRuntimeModel(session, nireq, options.layout, label=str(version_dir))


def make_session_options(plugin_config: Mapping[str, Any], nireq: int) -> ort.SessionOptions:
    """SessionOptions from plugin_config (keys: PLUGIN_CONFIG_KEYS, plus ONNX Runtime's session
    config entries with dots, e.g. "session.intra_op.allow_spinning": "0")."""
    so = ort.SessionOptions()
    so.intra_op_num_threads = max(1, cpu_count() // nireq)
    so.inter_op_num_threads = 1
    so.log_severity_level = 3  # errors only: warnings about unused initializers are noise in a server log
    if nireq > 1:  # several runs side by side: threads that spin while idle steal the others' cores
        so.add_session_config_entry("session.intra_op.allow_spinning", "0")
    for key, value in plugin_config.items():
        try:
            if "." in key:
                so.add_session_config_entry(key, str(value))
            elif key in _INT_OPTIONS:
                if not isinstance(value, int) or isinstance(value, bool) or value < 0:
                    raise ValueError("expected an integer >= 0")
                setattr(so, key, value)
            elif key in _BOOL_OPTIONS:
                if not isinstance(value, bool):
                    raise ValueError("expected true or false")
                setattr(so, key, value)
            elif key == "graph_optimization_level":
                so.graph_optimization_level = _OPTIMIZATION[str(value).lower()]
            elif key == "execution_mode":
                so.execution_mode = {
                    "sequential": ort.ExecutionMode.ORT_SEQUENTIAL,
                    "parallel": ort.ExecutionMode.ORT_PARALLEL,
                }[str(value).lower()]
            else:
                raise ValueError(
                    f"unknown key (known: {', '.join(PLUGIN_CONFIG_KEYS)}, or a session config entry with dots)"
                )
        except (KeyError, ValueError, RuntimeError) as exc:
            detail = str(exc) if isinstance(exc, ValueError) else "invalid value"
            if key == "graph_optimization_level":
                detail = f"expected one of {', '.join(_OPTIMIZATION)}"
            elif key == "execution_mode":
                detail = "expected sequential or parallel"
            raise ValueError(f"plugin_config {key}={value!r}: {detail}") from None
    return so


def _layouts(layout: str | Mapping[str, str] | None, names: list[str]) -> dict[str, str]:
    """The `layout` option as letters per input ("NHWC"). ONNX Runtime cannot transpose, so
    "NHWC:NCHW" is refused."""
    if layout is None:
        return {}
    if isinstance(layout, str):
        if len(names) != 1:
            raise ValueError(
                f"layout {layout!r} is given for the whole model, but it has {len(names)} inputs; give it per input"
            )
        layout = {names[0]: layout}
    for name, text in layout.items():
        if name not in names:
            raise ValueError(
                f"layout is given for {name!r}, which is not an input of the model (inputs: {', '.join(names)})"
            )
        if ":" in text:
            raise ValueError(
                f"layout {text!r}: the onnxruntime backend cannot transpose inputs; give the model's own layout"
            )
    return {name: text.upper() for name, text in layout.items()}


def tensor_spec(arg: Any, kind: str, layout: str | None = None) -> TensorSpec:
    dtype = _DTYPES.get(arg.type)
    if dtype is None:
        raise ValueError(f"{kind} {arg.name!r} has type {arg.type}, which dropin does not serve")
    shape = tuple(Dim.static(d) if isinstance(d, int) and d >= 0 else Dim.dynamic() for d in arg.shape or ())
    if layout is not None and len(layout) != len(shape):
        raise ValueError(f"layout {layout!r} does not fit {kind} {arg.name!r} of rank {len(shape)}")
    return TensorSpec(arg.name, dtype, shape, layout)


class OnnxRuntimeModel(LoadedModel):
    """An InferenceSession and a pool of `nireq` threads that run it."""

    def __init__(
        self, session: ort.InferenceSession, nireq: int, layout: str | Mapping[str, str] | None = None, label: str = ""
    ) -> None:
        inputs, outputs = session.get_inputs(), session.get_outputs()
        layouts = _layouts(layout, [arg.name for arg in inputs])
        self._inputs = {arg.name: tensor_spec(arg, "input", layouts.get(arg.name)) for arg in inputs}
        self._outputs = {arg.name: tensor_spec(arg, "output") for arg in outputs}
        self._output_names = [arg.name for arg in outputs]
        self._string_inputs = frozenset(n for n, s in self._inputs.items() if s.dtype is DType.STRING)
        self._string_outputs = frozenset(n for n, s in self._outputs.items() if s.dtype is DType.STRING)
        self.nireq = nireq
        self.label = label
        self._session: ort.InferenceSession | None = session
        self._executor: ThreadPoolExecutor | None = ThreadPoolExecutor(nireq, thread_name_prefix="dropin-onnxruntime")

    @property
    def inputs(self) -> Mapping[str, TensorSpec]:
        return self._inputs

    @property
    def outputs(self) -> Mapping[str, TensorSpec]:
        return self._outputs

    async def infer(self, inputs: Mapping[str, np.ndarray]) -> Mapping[str, np.ndarray]:
        executor = self._executor
        if executor is None:
            raise RuntimeError(f"model {self.label} is closed")
        unknown = [name for name in inputs if name not in self._inputs]
        if unknown or len(inputs) != len(self._inputs):
            missing = sorted(set(self._inputs) - set(inputs))
            problem = f"no input {unknown[0]!r}" if unknown else f"missing input(s) {', '.join(missing)}"
            raise KeyError(f"the model has {problem} (inputs: {', '.join(self._inputs)})")
        feed = dict(inputs)
        for name in self._string_inputs:  # ONNX Runtime takes str, not bytes
            feed[name] = _decode(name, inputs[name])
        return await asyncio.get_running_loop().run_in_executor(executor, self._run, feed, perf_counter())

    def _run(self, feed: dict[str, np.ndarray], submitted: float) -> InferOutputs:
        """Runs in a pool thread; the time queued for a thread is the wait for an infer request."""
        started = perf_counter()
        session = self._session
        if session is None:
            raise RuntimeError(f"model {self.label} is closed")
        try:
            results = session.run(self._output_names, feed)
        except Exception as exc:  # onnxruntime's Fail, InvalidArgument, RuntimeException, ...
            raise InferenceError(f"ONNX Runtime inference failed: {ort_message(exc)}") from None
        outputs = {}
        for name, result in zip(self._output_names, results, strict=False):
            outputs[name] = _encode(result) if name in self._string_outputs else result
        return InferOutputs(outputs, started - submitted, perf_counter() - started)

    def close(self) -> None:
        """Wait for the requests in flight, then release the threads and the session."""
        executor, self._executor = self._executor, None
        if executor is not None:
            executor.shutdown(wait=True)
        self._session = None


def _decode(name: str, values: np.ndarray) -> np.ndarray:
    out = np.empty(values.shape, dtype=object)
    flat = out.reshape(-1)
    for i, value in enumerate(values.reshape(-1)):
        try:
            flat[i] = value.decode("utf-8") if isinstance(value, bytes) else str(value)
        except UnicodeDecodeError:
            raise DropinError(
                Status.UNSUPPORTED_STRING_INPUT,
                f"input {name}: item {i} is not UTF-8 text, and ONNX Runtime strings must be",
            ) from None
    return out


def _encode(values: np.ndarray) -> np.ndarray:
    out = np.empty(values.shape, dtype=object)
    flat = out.reshape(-1)
    for i, value in enumerate(values.reshape(-1)):
        flat[i] = value.encode("utf-8") if isinstance(value, str) else bytes(value)
    return out
