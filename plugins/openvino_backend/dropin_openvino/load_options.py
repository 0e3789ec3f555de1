"""OVMS's load options, in OVMS's formats, applied to an OpenVINO model before it is compiled."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import openvino as ov
from openvino.preprocess import PrePostProcessor

from dropin.backend import LoadOptions

from .messages import ov_message
from .metadata import port_names

AUTO = "auto"


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
            raise ValueError(
                f"{what} is given for {name!r}, which is not an input of the model (inputs: {', '.join(names)})"
            )
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
        # "auto": loaded with its own shapes; the core loads it again with a request's (dropin.reshape)
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
        raise ValueError(
            f"invalid shape {text!r}: expected e.g. (1,3,224,224), -1 for any size, 1:8 for a range"
        ) from None


def _parse_batch(value: str | int) -> ov.Dimension | None:
    if isinstance(value, str) and value.strip() == AUTO:
        return None  # "auto": loaded with its own batch; the core loads it again with a request's
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
