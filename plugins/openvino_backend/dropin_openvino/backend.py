"""The OpenVINO backend: loads a version directory with OpenVINO.

Loading (in a worker thread, `OpenVINOBackend.load`): find the model file as OVMS does, read it,
apply the OVMS load options in OVMS's order (layout, then shape, else batch size: load_options.py),
compile it for the target device with the plugin config, and create `nireq` infer requests in
the model it returns, an `OpenVINOModel` (serving.py), whose inputs and outputs metadata.py names
and types.
"""

from __future__ import annotations

import logging
from pathlib import Path

import openvino as ov
import openvino.opset13 as ops
from openvino.passes import LowLatency2, Manager

from dropin.backend import Backend, LoadOptions
from dropin.dtypes import DType

from . import server_options
from .load_options import apply_load_options
from .messages import ov_message
from .serving import OpenVINOModel

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

#: plugin_config keys that take effect when a model is read (as well as handed to compile_model)
READ_PROPERTIES = frozenset({"ENABLE_MMAP"})


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


class OpenVINOBackend(Backend):
    """Loads model versions with one shared `ov.Core` (OpenVINO's Core is thread-safe)."""

    # Claims before ONNX Runtime (50): .onnx files load with OpenVINO, as in OVMS, unless a
    # model configuration says "backend": "onnxruntime".
    priority = 100

    def __init__(self) -> None:
        self.core = ov.Core()
        extension = server_options.current.cpu_extension
        if extension is not None:
            try:
                self.core.add_extension(extension)
            except RuntimeError as exc:
                why = ov_message(exc)
                raise ValueError(f"--cpu_extension {extension}: OpenVINO could not load it: {why}") from None

    @classmethod
    def claims(cls, version_dir: Path) -> bool:
        return find_model_file(version_dir) is not None

    def load(self, version_dir: Path, options: LoadOptions) -> OpenVINOModel:
        version_dir = Path(version_dir)
        model_file = find_model_file(version_dir)
        if model_file is None:
            raise FileNotFoundError(f"no model file found in {version_dir}: expected {EXPECTED_FILES}")
        # the read-time properties go to read_model: compile_model accepts them too, but by then
        # the weights are read (ENABLE_MMAP false reads them into memory instead of mapping them)
        read_config = {k: v for k, v in options.plugin_config.items() if k in READ_PROPERTIES}
        try:
            if model_file.suffix == ".xml":
                model = self.core.read_model(model_file, weights_file(model_file), config=read_config)
            else:
                model = self.core.read_model(model_file, config=read_config)
        except RuntimeError as exc:
            raise ValueError(f"OpenVINO could not read {model_file.name}: {ov_message(exc)}") from None

        replace_string_identities(model)
        model = apply_load_options(model, options)
        if options.low_latency_transformation:
            low_latency(model, model_file.name)
        try:
            config = server_options.compile_config(options.plugin_config, allow_cache(options))
            compiled = self.core.compile_model(model, options.target_device, config)
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
        loaded = OpenVINOModel(model, compiled, max(nireq, 1), label=str(version_dir), elastic=options.nireq <= 0)
        warn_about_64_bit_types(loaded, options.target_device, version_dir)
        return loaded


def low_latency(model: ov.Model, file_name: str) -> None:
    """OpenVINO's LowLatency2, as OVMS applies it to stateful models with low_latency_transformation:
    the recurrent ops' (TensorIterator, Loop, RNN/GRU/LSTM sequences) hidden states become
    variables, kept between the requests of a sequence."""
    manager = Manager()
    manager.register_pass(LowLatency2())
    try:
        manager.run_passes(model)
    except RuntimeError as exc:
        raise ValueError(f"OpenVINO's low latency transformation failed on {file_name}: {ov_message(exc)}") from None


def allow_cache(options: LoadOptions) -> bool:
    """The model's allow_cache (config.json), true unless it says false, as OVMS for models it
    loads itself."""
    return options.options.get("allow_cache", True) is not False


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


def warn_about_64_bit_types(model: OpenVINOModel, device: str, version_dir: Path) -> None:
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
