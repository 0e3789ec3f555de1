"""The OpenVINO backend: loads a version directory with OpenVINO and serves it.

Loading (in a worker thread, `OpenVINOBackend.load`): find the model file as OVMS does, read it,
apply the OVMS load options in OVMS's order (layout, then shape, else batch size), compile it for
the target device with the plugin config, and create `nireq` infer requests.

Serving (`OpenVINOModel.infer`, on the event loop): the request is handed to a pool of `nireq`
threads, each running one infer request synchronously (`InferRequest.infer` releases the GIL);
the coroutine awaits the result and the loop never blocks. Exception: a model whose inferences
take under INLINE_SECONDS (a moving average of OpenVINO's InferRequest.latency) runs requests with
small inputs directly on the loop when an infer request is free, because the hop to a thread and
back costs more than such an inference (docs/performance.md). Every model starts in the threads.
Each infer request owns its input tensors (`InferSlot`): inputs are copied into them, or shared
when large and writable, without OpenVINO's Python input dispatcher.

Why threads and not `AsyncInferQueue` callbacks (measured with openvino 2026.4, same throughput
and latency either way on this machine):
- a request that fails at inference time never calls the Python callback, so its awaiting
  coroutine would hang forever;
- the failed request then poisons the queue: every later `start_async` and `wait_all` raises that
  old error, so one bad request would break the model version for good;
- an `AsyncInferQueue` whose last reference is dropped by the garbage collector on an OpenVINO
  callback thread deadlocks in the request destructor.
A synchronous `infer()` raises the error to its caller and the request stays usable.
"""

from __future__ import annotations

import asyncio
import logging
import queue
import re
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from time import perf_counter
from typing import Any, Mapping, Sequence

import numpy as np
import openvino as ov
import openvino.opset13 as ops
from openvino.preprocess import PrePostProcessor

from dropin.backend import Backend, InferOutputs, LoadedModel, LoadOptions
from dropin.dtypes import DType
from dropin.errors import DropinError, Status
from dropin.shapes import Dim, TensorSpec

log = logging.getLogger("dropin.openvino")

#: Model formats in OVMS's detection order: the first whose extensions are all present wins.
MODEL_FORMATS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("OpenVINO IR", (".xml", ".bin")),
    ("ONNX", (".onnx",)),
    ("PaddlePaddle", (".pdmodel", ".pdiparams")),
    ("TensorFlow", (".pb",)),
    ("TensorFlow Lite", (".tflite",)),
)
EXPECTED_FILES = ".xml+.bin, .onnx, .pdmodel+.pdiparams, .pb (saved_model.pb: the directory) or .tflite"

_DTYPES: dict[str, DType] = {
    "f32": DType.FP32,
    "f64": DType.FP64,
    "f16": DType.FP16,
    "i64": DType.I64,
    "i32": DType.I32,
    "i16": DType.I16,
    "i8": DType.I8,
    "u64": DType.U64,
    "u32": DType.U32,
    "u16": DType.U16,
    "u8": DType.U8,
    "boolean": DType.BOOL,
    "string": DType.STRING,
}

AUTO = "auto"


class InferenceError(RuntimeError):
    """OpenVINO failed to run a request (the message is OpenVINO's, without its source locations)."""


def find_model_file(version_dir: Path | str) -> Path | None:
    """The file OpenVINO should read for a version directory, or None if it holds no model.

    Formats are tried in OVMS's order (IR, ONNX, Paddle, TensorFlow, TFLite); file names are free.
    For IR the .xml is returned (the weights are found by `weights_file`). For TensorFlow a
    `saved_model.pb` means the directory itself is the model, so the directory is returned.
    """
    directory = Path(version_dir)
    try:
        files = sorted(p for p in directory.iterdir() if p.is_file())
    except OSError:  # missing, not a directory, unreadable
        return None
    by_suffix: dict[str, list[Path]] = {}
    for path in files:
        by_suffix.setdefault(path.suffix, []).append(path)
    for _, suffixes in MODEL_FORMATS:
        if all(suffix in by_suffix for suffix in suffixes):
            candidates = by_suffix[suffixes[0]]
            if suffixes[0] == ".pb" and any(p.name == "saved_model.pb" for p in candidates):
                return directory
            return candidates[0]
    return None


def weights_file(xml: Path) -> Path:
    """The .bin for an IR .xml: the one with the same stem, else the directory's only/first .bin."""
    same_stem = xml.with_suffix(".bin")
    if same_stem.is_file():
        return same_stem
    return sorted(xml.parent.glob("*.bin"))[0]


def ov_message(exc: BaseException) -> str:
    """OpenVINO's error text without its source locations ("Exception from src/...cpp:NN:",
    "Check '...' failed at src/...cpp:NN:"), on one line."""
    text = _OV_NOISE.sub(" ", str(exc))
    return " ".join(text.split()) or str(exc).strip() or type(exc).__name__


_OV_NOISE = re.compile(r"Exception from \S+:\d+:|Check '.*?' failed at \S+:\d+:")


class OpenVINOBackend(Backend):
    """Loads model versions with one shared `ov.Core` (OpenVINO's Core is thread-safe)."""

    # Claims before ONNX Runtime (50): .onnx files load with OpenVINO, as in OVMS, unless a
    # model configuration says "backend": "onnxruntime".
    priority = 100

    def __init__(self) -> None:
        self.core = ov.Core()

    @classmethod
    def claims(cls, version_dir: Path) -> bool:
        return find_model_file(version_dir) is not None

    def load(self, version_dir: Path, options: LoadOptions) -> "OpenVINOModel":
        version_dir = Path(version_dir)
        model_file = find_model_file(version_dir)
        if model_file is None:
            raise FileNotFoundError(f"no model file found in {version_dir}: expected {EXPECTED_FILES}")
        try:
            if model_file.suffix == ".xml":
                model = self.core.read_model(model_file, weights_file(model_file))
            else:
                model = self.core.read_model(model_file)
        except RuntimeError as exc:
            raise ValueError(f"OpenVINO could not read {model_file.name}: {ov_message(exc)}") from None

        replace_string_identities(model)
        model = apply_load_options(model, options)
        try:
            compiled = self.core.compile_model(model, options.target_device, dict(options.plugin_config))
        except RuntimeError as exc:
            raise ValueError(
                f"OpenVINO could not compile {model_file.name} for device {options.target_device!r}: {ov_message(exc)}"
            ) from None

        nireq = options.nireq
        if nireq <= 0:
            try:
                nireq = int(compiled.get_property("OPTIMAL_NUMBER_OF_INFER_REQUESTS"))
            except RuntimeError:  # a device without the property: one request, as OVMS does
                nireq = 1
        loaded = OpenVINOModel(model, compiled, max(nireq, 1), label=str(version_dir))
        warn_about_64_bit_types(loaded, options.target_device, version_dir)
        return loaded


def replace_string_identities(model: ov.Model) -> None:
    """Swap each Identity on a string tensor for a no-op Reshape, in place.

    OpenVINO 2026.4's CPU plugin frees a string Identity's buffers twice: the process aborts
    ("free(): invalid pointer") when the compiled model is released after an inference, i.e. when
    the server retires the version. ONNX models bring such Identities (ONNX's `Identity` op)."""
    for node in model.get_ordered_ops():
        if node.get_type_name() != "Identity" or node.get_output_element_type(0) != ov.Type.string:
            continue
        source = node.input_value(0)
        same = ops.reshape(source, ops.shape_of(source), special_zero=False)
        same.set_friendly_name(node.get_friendly_name())
        out = node.output(0)
        same.output(0).get_tensor().set_names(out.get_names())
        out.get_tensor().set_names(set())
        for target in list(out.get_target_inputs()):
            target.replace_source_output(same.output(0))


_NARROWED = {DType.I64: "32-bit integers", DType.U64: "32-bit integers", DType.FP64: "32-bit floats"}


def warn_about_64_bit_types(model: "OpenVINOModel", device: str, version_dir: Path) -> None:
    """OpenVINO's CPU plugin computes I64/U64 in 32-bit integers and FP64 in 32-bit floats, inside
    every operation (even a Reshape): values outside their range come back changed. Say so once
    per version, naming the tensors."""
    if "CPU" not in device.upper() and device.upper() not in ("AUTO", "MULTI", "HETERO"):
        return
    narrowed = [
        f"{kind} {name} ({spec.dtype.value}: {_NARROWED[spec.dtype]})"
        for kind, specs in (("input", model.inputs), ("output", model.outputs))
        for name, spec in specs.items()
        if spec.dtype in _NARROWED
    ]
    if narrowed:
        # clients' values may be out of range: a warning; outputs alone (argmax labels): a note
        level = logging.WARNING if any(spec.dtype in _NARROWED for spec in model.inputs.values()) else logging.INFO
        log.log(
            level,
            "%s: OpenVINO's CPU plugin computes %s inside the model; values beyond that range lose "
            "precision or wrap around", version_dir, ", ".join(narrowed),
        )


# -- load options (OVMS's formats) ------------------------------------------------------------


def apply_load_options(model: ov.Model, options: LoadOptions) -> ov.Model:
    """Apply layout, then shape, else batch size, as OVMS does. Raises ValueError on bad options."""
    inputs, outputs = port_names(model)
    if options.layout is not None:
        model = _apply_layouts(model, options.layout, inputs, outputs)
    shapes = _requested_shapes(options.shape, inputs)
    if shapes:
        try:
            model.reshape(shapes)
        except RuntimeError as exc:
            wanted = {inputs[i]: str(shape) for i, shape in shapes.items()}
            raise ValueError(f"the model cannot be reshaped to {wanted}: {ov_message(exc)}") from None
    elif options.batch_size is not None and options.shape is None:  # shape takes precedence over batch_size
        batch = _parse_batch(options.batch_size)
        if batch is not None:
            for parameter in model.get_parameters():
                if parameter.get_layout().empty:
                    parameter.set_layout(ov.Layout("N..."))  # OVMS's default: the batch is dim 0
            try:
                ov.set_batch(model, batch)
            except RuntimeError as exc:
                raise ValueError(f"cannot set batch size {options.batch_size!r}: {ov_message(exc)}") from None
    return model


def _by_index(value: str | Mapping[str, str], names: Sequence[str], what: str) -> dict[int, str]:
    """Option values keyed by input index: a single value needs a single-input model."""
    if isinstance(value, str):
        if len(names) != 1:
            raise ValueError(
                f"{what} {value!r} is given for the whole model, but it has {len(names)} inputs "
                f"({', '.join(names)}); give it per input: {{\"name\": {value!r}}}"
            )
        return {0: value}
    indexed: dict[int, str] = {}
    for name, item in value.items():
        if name not in names:
            raise ValueError(f"{what} is given for {name!r}, which is not an input of the model (inputs: {', '.join(names)})")
        indexed[names.index(name)] = item
    return indexed


def _apply_layouts(
    model: ov.Model, layout: str | Mapping[str, str], inputs: Sequence[str], outputs: Sequence[str]
) -> ov.Model:
    """OVMS's `layout`: "NHWC" (the model's layout) or "NHWC:NCHW" (what clients send : the model's),
    the latter adding a transpose. A mapping may also name outputs."""
    ppp = PrePostProcessor(model)
    if isinstance(layout, str):
        targets = [(ppp.input(index), text) for index, text in _by_index(layout, inputs, "layout").items()]
    else:
        targets = []
        for name, text in layout.items():
            if name in inputs:
                targets.append((ppp.input(inputs.index(name)), text))
            elif name in outputs:
                targets.append((ppp.output(outputs.index(name)), text))
            else:
                raise ValueError(
                    f"layout is given for {name!r}, which is not an input or output of the model "
                    f"(inputs: {', '.join(inputs)}; outputs: {', '.join(outputs)})"
                )
    for port, text in targets:
        tensor_layout, _, model_layout = text.partition(":")
        try:
            port.tensor().set_layout(ov.Layout(tensor_layout))
            port.model().set_layout(ov.Layout(model_layout or tensor_layout))
        except RuntimeError as exc:
            raise ValueError(f"invalid layout {text!r}: {ov_message(exc)}") from None
    try:
        return ppp.build()
    except RuntimeError as exc:
        raise ValueError(f"cannot apply layout {layout!r}: {ov_message(exc)}") from None


def _requested_shapes(shape: str | Mapping[str, str] | None, inputs: Sequence[str]) -> dict[int, ov.PartialShape]:
    if shape is None or (isinstance(shape, str) and shape.strip() == AUTO):
        # "auto" (reshape to each request's shape) is not supported: the model keeps its own shapes.
        return {}
    return {
        index: parse_shape(text)
        for index, text in _by_index(shape, inputs, "shape").items()
        if text.strip() != AUTO
    }


def parse_shape(text: str) -> ov.PartialShape:
    """An OVMS shape: "(1,3,224,224)", with -1 for any size and "1:8" for a range; [] works too."""
    body = text.strip()
    if len(body) >= 2 and body[0] in "([" and body[-1] in ")]":
        body = body[1:-1]
    try:
        return ov.PartialShape([_parse_dim(item) for item in body.split(",")] if body.strip() else [])
    except ValueError:
        raise ValueError(f"invalid shape {text!r}: expected e.g. (1,3,224,224), -1 for any size, 1:8 for a range") from None


def _parse_batch(value: str | int) -> ov.Dimension | None:
    if isinstance(value, str) and value.strip() == AUTO:
        return None  # "auto" (reshape to each request's batch) is not supported: the model keeps its batch
    try:
        return _parse_dim(str(value))
    except ValueError:
        raise ValueError(f"invalid batch_size {value!r}: expected a positive number, -1 or a range like 1:8") from None


def _parse_dim(item: str) -> ov.Dimension:
    item = item.strip()
    if ":" in item:
        low, high = (int(part) for part in item.split(":", 1))
        if low < 0 or high < low:
            raise ValueError(item)
        return ov.Dimension(low, high)
    size = int(item)
    if size == -1:
        return ov.Dimension()
    if size < 0:
        raise ValueError(item)
    return ov.Dimension(size)


# -- metadata ---------------------------------------------------------------------------------


def port_names(model: ov.Model) -> tuple[list[str], list[str]]:
    """The names dropin serves the inputs and outputs under, in port order.

    A tensor name where the model has one (`get_any_name()`); otherwise the parameter's friendly
    name, or the producing node's friendly name (with ":<port>" for nodes with several outputs).
    """
    inputs = [_name(port, port.get_node().get_friendly_name()) for port in model.inputs]
    outputs = []
    for port in model.outputs:
        source = port.get_node().input_value(0)  # the port feeds a Result node
        fallback = source.get_node().get_friendly_name()
        if source.get_node().get_output_size() > 1:
            fallback += f":{source.get_index()}"
        outputs.append(_name(port, fallback))
    for kind, names in (("input", inputs), ("output", outputs)):
        if len(set(names)) != len(names):
            raise ValueError(f"the model has several {kind}s named alike: {', '.join(names)}")
    return inputs, outputs


def _name(port: Any, fallback: str) -> str:
    try:
        return port.get_any_name()
    except RuntimeError:
        names = sorted(port.get_names())
        return names[0] if names else fallback


def tensor_spec(name: str, port: Any, layout: ov.Layout | None, kind: str) -> TensorSpec:
    type_name = port.get_element_type().get_type_name()
    dtype = _DTYPES.get(type_name)
    if dtype is None:
        raise ValueError(
            f"{kind} {name!r} has element type {type_name}, which dropin does not serve "
            f"(supported: {', '.join(_DTYPES)})"
        )
    shape = port.get_partial_shape()
    if shape.rank.is_dynamic:
        raise ValueError(f"{kind} {name!r} has a dynamic rank; give its shape with the shape option")
    return TensorSpec(name, dtype, tuple(_dim(d) for d in shape), layout_letters(layout))


def _dim(d: ov.Dimension) -> Dim:
    if d.is_static:
        return Dim.static(d.get_length())
    high = d.get_max_length()
    return Dim(max(d.get_min_length(), 0), None if high < 0 else high)


def layout_letters(layout: ov.Layout | None) -> str | None:
    """"[N,H,W,C]" -> "NHWC", "[N,...]" -> "N...", "[?,C,H,W]" -> "?CHW"; None when unset or named
    with longer words."""
    if layout is None or layout.empty:
        return None
    parts = layout.to_string().strip("[]").split(",")
    if parts == ["..."] or not all(len(p) == 1 or p == "..." for p in parts):
        return None
    return "".join(parts)


# -- serving ----------------------------------------------------------------------------------


#: STRING inputs reach OpenVINO as numpy fixed-width bytes, every item padded to the longest:
#: one long string among many short ones would cost gigabytes (1 MiB and 30000 empty strings:
#: 30 GiB). Refused when the padded array would exceed this multiple of the string bytes sent,
#: and this floor (below it, any mix of lengths is fine).
PAD_FACTOR = 16
PAD_FLOOR_BYTES = 16 << 20


def string_tensor(name: str, values: np.ndarray) -> np.ndarray:
    """A STRING input as OpenVINO's Python API takes it: fixed-width bytes."""
    check_strings(name, values)
    return np.asarray(values, dtype=np.bytes_)


def check_strings(name: str, values: np.ndarray) -> None:
    """Refuse strings OpenVINO cannot be given as they are.

    numpy's fixed-width bytes, the only way strings reach OpenVINO from Python (its `bytes_data`
    setter too), drop trailing NUL bytes: values ending in one are refused rather than changed.
    A plain loop: the items are Python objects, which numpy cannot vectorise over (measured: a
    join of the items plus a numpy index of their last bytes costs the same per item, and more
    for a few items). And the padding to the longest item must stay within PAD_FACTOR times
    what was sent."""
    for value in values.flat:
        if value[-1:] == b"\0":
            raise DropinError(
                Status.UNSUPPORTED_STRING_INPUT,
                f"input {name}: the OpenVINO backend cannot pass strings that end in a NUL byte",
            )
    count = values.size
    if count < 2:
        return
    longest = max(map(len, values.flat))
    padded = count * longest
    if padded <= PAD_FLOOR_BYTES:
        return
    sent = sum(map(len, values.flat))
    if padded > PAD_FACTOR * sent:
        raise DropinError(
            Status.TOO_MANY_ELEMENTS,
            f"input {name}: {count} strings padded to the longest ({longest} bytes) would take {padded} "
            f"bytes in the OpenVINO backend, more than {PAD_FACTOR} times the {sent} bytes sent; send strings of "
            f"similar lengths, or fewer in one request",
        )


#: Inferences shorter than this (a moving average) run on the event loop instead of a thread,
#: if their inputs are small (a model with dynamic shapes may get a large request at any time).
INLINE_SECONDS = 100e-6
INLINE_BYTES = 64 << 10
#: Writable inputs larger than this are shared with OpenVINO instead of copied.
SHARE_BYTES = 64 << 10


class InferSlot:
    """One infer request with input tensors of its own, which requests are copied into.

    Numeric inputs sent as `tensor_content` are read-only views of the request's bytes, which
    OpenVINO cannot share: its input dispatcher copies them anyway, through several Python layers
    (about 12 us per call). Copying straight into tensors the slot owns costs one numpy copy, the
    same bytes. Large writable arrays (decoded images, JSON) are shared instead, without a copy.
    """

    __slots__ = ("request", "views")

    def __init__(self, request: ov.InferRequest, inputs: int) -> None:
        self.request = request
        # numpy views of the slot's own input tensors, by port; None while the port holds a
        # shared tensor (or none yet)
        self.views: list[np.ndarray | None] = [None] * inputs

    def set_inputs(self, feed: dict[int, np.ndarray], types: Sequence[ov.Type]) -> None:
        request = self.request
        views = self.views
        for index, array in feed.items():
            if array.nbytes > SHARE_BYTES and array.flags.writeable and array.flags.c_contiguous:
                request.set_input_tensor(index, ov.Tensor(array, shared_memory=True))
                views[index] = None
                continue
            view = views[index]
            if view is None or view.shape != array.shape:
                tensor = ov.Tensor(types[index], ov.Shape(array.shape))
                request.set_input_tensor(index, tensor)
                view = views[index] = tensor.data  # the view keeps the tensor alive
            view[...] = array


class OpenVINOModel(LoadedModel):
    """A compiled model with `nireq` infer requests, each used by one thread of a small pool."""

    def __init__(self, model: ov.Model, compiled: ov.CompiledModel, nireq: int, label: str = "") -> None:
        input_names, output_names = port_names(model)
        parameters = model.get_parameters()
        results = model.get_results()
        self._inputs = {
            name: tensor_spec(name, port, parameters[i].get_layout(), "input")
            for i, (name, port) in enumerate(zip(input_names, compiled.inputs))
        }
        self._outputs = {
            name: tensor_spec(name, port, results[i].get_layout(), "output")
            for i, (name, port) in enumerate(zip(output_names, compiled.outputs))
        }
        # Prepared once: request names -> input port index, and which inputs/outputs hold strings.
        self._input_index = {name: i for i, name in enumerate(input_names)}
        self._string_inputs = frozenset(n for n, s in self._inputs.items() if s.dtype is DType.STRING)
        self._output_names = tuple(output_names)
        self._string_outputs = frozenset(i for i, n in enumerate(output_names) if self._outputs[n].dtype is DType.STRING)
        self.nireq = nireq
        self.label = label
        try:
            self.streams = int(compiled.get_property("NUM_STREAMS"))
        except (RuntimeError, TypeError, ValueError):
            self.streams = None
        self._compiled: ov.CompiledModel | None = compiled
        self._input_types = tuple(port.get_element_type() for port in compiled.inputs)
        self._requests: queue.SimpleQueue[InferSlot] = queue.SimpleQueue()
        for _ in range(nireq):
            self._requests.put(InferSlot(compiled.create_infer_request(), len(compiled.inputs)))
        self._executor: ThreadPoolExecutor | None = ThreadPoolExecutor(nireq, thread_name_prefix="dropin-openvino")
        # Moving average of inference time. Models whose inferences take less than
        # INLINE_SECONDS run on the event loop: handing them to a thread and back costs more than
        # the inference. It starts high, so every model begins in the threads and is measured.
        self._inline_ewma = 1.0

    @property
    def inputs(self) -> Mapping[str, TensorSpec]:
        return self._inputs

    @property
    def outputs(self) -> Mapping[str, TensorSpec]:
        return self._outputs

    def check_inputs(self, inputs: Mapping[str, np.ndarray]) -> None:
        for name in self._string_inputs:
            check_strings(name, inputs[name])

    async def infer(self, inputs: Mapping[str, np.ndarray]) -> Mapping[str, np.ndarray]:
        executor = self._executor
        if executor is None:
            raise RuntimeError(f"model {self.label} is closed")
        try:
            feed = {self._input_index[name]: array for name, array in inputs.items()}
        except KeyError as exc:
            raise KeyError(f"the model has no input {exc.args[0]!r} (inputs: {', '.join(self._inputs)})") from None
        if len(feed) != len(self._input_index):
            # an infer request keeps its last input tensors: running without one would compute
            # on an earlier request's data
            missing = sorted(set(self._input_index) - set(inputs))
            raise KeyError(f"missing input(s) {', '.join(missing)} (inputs: {', '.join(self._inputs)})")
        for name in self._string_inputs:  # OpenVINO takes fixed-width bytes, not object arrays
            feed[self._input_index[name]] = string_tensor(name, inputs[name])
        if self._inline_ewma < INLINE_SECONDS and sum([a.nbytes for a in feed.values()]) <= INLINE_BYTES:
            slot = self._take_request()
            if slot is not None:  # else every request is busy in a thread: queue behind them
                started = perf_counter()
                try:
                    outputs = self._run(slot, feed)
                finally:
                    self._requests.put(slot)
                outputs.infer_seconds = perf_counter() - started
                return outputs
        return await asyncio.get_running_loop().run_in_executor(executor, self._timed, feed, perf_counter())

    def _take_request(self) -> InferSlot | None:
        try:
            return self._requests.get_nowait()
        except queue.Empty:
            return None

    def _observe(self, seconds: float) -> None:
        """A moving average of how long inferences take (OpenVINO's InferRequest.latency); it
        decides where the next one runs."""
        # Capped: one outlier (the OS preempting the inference) must not send a fast model back
        # to the threads for the next twenty requests; a slow model still averages over the limit.
        self._inline_ewma += (min(seconds, 4 * INLINE_SECONDS) - self._inline_ewma) * 0.1

    def _timed(self, feed: dict[int, np.ndarray], submitted: float) -> InferOutputs:
        """Runs in a pool thread: the time spent queued for a thread is the wait for an infer
        request (reported as ovms_wait_for_infer_req_time_us)."""
        started = perf_counter()
        outputs = self._infer_blocking(feed)
        outputs.wait_seconds = started - submitted
        outputs.infer_seconds = perf_counter() - started
        return outputs

    def _infer_blocking(self, feed: dict[int, np.ndarray]) -> InferOutputs:
        """Runs in a pool thread. There are as many requests as threads, so get() never waits."""
        slot = self._requests.get()
        try:
            return self._run(slot, feed)
        finally:
            self._requests.put(slot)

    def _run(self, slot: InferSlot, feed: dict[int, np.ndarray]) -> InferOutputs:
        """The outputs by name; the caller sets their timings."""
        request = slot.request
        try:
            if self._string_inputs:
                # strings go through OpenVINO's dispatcher, which makes string tensors of them;
                # share_inputs: no copy of the others (the caller keeps them alive until we return)
                results = request.infer(feed, share_inputs=True, share_outputs=False, decode_strings=False).to_tuple()
            else:
                slot.set_inputs(feed, self._input_types)
                # share_outputs=False: the results are copies, so the request's memory can be reused
                results = request.infer(None, share_outputs=False, decode_strings=False).to_tuple()
        except RuntimeError as exc:
            raise InferenceError(f"OpenVINO inference failed: {ov_message(exc)}") from None
        # OpenVINO's own measure of the inference, without the wait for the GIL that a thread
        # pays afterwards (up to the 5 ms switch interval when the event loop is busy).
        # Threads may race on this update and lose one: it is only a hint.
        self._observe(request.latency * 1e-3)
        if self._string_outputs:
            results = tuple(r.astype(object) if i in self._string_outputs else r for i, r in enumerate(results))
        return InferOutputs(zip(self._output_names, results), 0.0, 0.0)

    def close(self) -> None:
        """Wait for the requests in flight, then release the threads, requests and compiled model."""
        executor, self._executor = self._executor, None
        if executor is not None:
            executor.shutdown(wait=True)
        while not self._requests.empty():
            self._requests.get_nowait()
        self._compiled = None
