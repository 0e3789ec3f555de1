"""Binary image inputs: encoded images in a DT_STRING tensor become the model's tensor.

At load time `ImagePreprocessor.claim` takes every 4-D input whose element type OVMS converted
images to (FP32, FP64, FP16, I32, I16, U16, I8, U8), works out its layout (the model's, else the
`layout` option, else inferred from the shape), and checks the image options (`color_format`,
`mean`, `scale`, `max_pixels`). Per request, `ImageConverter.convert` (in a worker thread):

1. checks the string tensor as OVMS did (one dim, batch, no empty strings);
2. reads every image's header: only accepted formats, none larger than the pixel limit, and the
   whole batch no larger either, all before anything is decoded;
3. decodes each image with OpenCV (BGR, or gray, or BGRA, as stored: `IMREAD_UNCHANGED`), checks
   resolution and channels as OVMS did (or converts colours when `color_format` asks for it),
   resizes (bilinear) to the model's height and width where the dims allow it, and writes it,
   cast to the model's element type, straight into the model-layout batch tensor;
4. subtracts `mean` and divides by `scale`, per channel, when they are set.
"""

from __future__ import annotations

import logging
import numbers
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import cv2
import numpy as np

from dropin.dtypes import DType
from dropin.errors import DropinError, Status
from dropin.preprocess import InputConverter, Preprocessor, check_binary_batch, input_option
from dropin.shapes import Dim, TensorSpec, format_shape

from . import DEFAULT_MAX_PIXELS, ENV_MAX_PIXELS
from .errors import BINARY_IMAGES_RESOLUTION_MISMATCH, IMAGE_PARSING_FAILED, INVALID_NO_OF_CHANNELS
from .headers import HeaderError, ImageHeader, read_header

log = logging.getLogger("dropin.image")

#: the model element types OVMS converted decoded images to; inputs of other types are not claimed
IMAGE_DTYPES = frozenset({DType.FP32, DType.FP64, DType.FP16, DType.I32, DType.I16, DType.U16, DType.I8, DType.U8})
FLOAT_DTYPES = frozenset({DType.FP32, DType.FP64, DType.FP16})

#: color_format values and the channel count each gives
COLOR_CHANNELS = {"BGR": 3, "RGB": 3, "GRAY": 1}

_TO_GRAY = {3: cv2.COLOR_BGR2GRAY, 4: cv2.COLOR_BGRA2GRAY}
_TO_BGR = {1: cv2.COLOR_GRAY2BGR, 4: cv2.COLOR_BGRA2BGR}
_TO_RGB = {1: cv2.COLOR_GRAY2RGB, 3: cv2.COLOR_BGR2RGB, 4: cv2.COLOR_BGRA2RGB}


# -- layout -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ImageLayout:
    """Where the batch, height, width and channel dims of a 4-D input are."""

    letters: str  # "NHWC", "NCHW", "?HWC", ...
    batch: int  # the N position, or the one unnamed dim when the layout has no N
    height: int
    width: int
    channels: int
    has_batch: bool
    source: str  # "model", "layout option" or "inferred"

    @property
    def nhwc_axes(self) -> tuple[int, int, int, int]:
        """`model_array.transpose(nhwc_axes)` is the NHWC view of an array in this layout."""
        return (self.batch, self.height, self.width, self.channels)


def _image_letters(text: Any) -> str | None:
    """"NHWC", "nchw", "[N,C,H,W]", "?HWC" -> upper-case letters when they place H, W and C in 4
    dims (N at most once); None for anything else ("N...", "NC", 5-D ...)."""
    if not isinstance(text, str):
        return None
    letters = text.strip().strip("[]").replace(",", "").replace(" ", "").upper()
    if len(letters) != 4 or set(letters) - set("NHWC?"):
        return None
    if any(letters.count(c) != 1 for c in "HWC") or letters.count("N") > 1:
        return None
    return letters


def infer_letters(shape: tuple[Dim, ...], channels: int | None = None) -> str:
    """NHWC or NCHW from a 4-D shape: the dim that holds the channels is static and small.

    With a known channel count (from color_format) the dim equal to it decides; otherwise a last
    dim of 1 or 3 means NHWC and a second dim of 1 or 3 (with a last dim that is not) NCHW.
    Anything else is read as NHWC, as OVMS read every image input."""
    wanted = (channels,) if channels else (1, 3)

    def holds_channels(d: Dim) -> bool:
        return d.is_static and d.low in wanted

    if not holds_channels(shape[3]) and holds_channels(shape[1]):
        return "NCHW"
    return "NHWC"


def resolve_layout(spec: TensorSpec, option: Any, channels: int | None = None) -> ImageLayout | None:
    """The image layout of a model input: the model's own, else the `layout` option (the client
    side of "NHWC:NCHW"), else inferred from the shape. None when the input is not 4-D."""
    if spec.rank != 4:
        return None
    letters = _image_letters(spec.layout)
    source = "model"
    if letters is None:
        letters = _image_letters(option.split(":", 1)[0] if isinstance(option, str) else None)
        source = "layout option"
    if letters is None:
        letters = infer_letters(spec.shape, channels)
        source = "inferred"
    has_batch = "N" in letters
    batch = letters.index("N") if has_batch else letters.index("?")
    return ImageLayout(letters, batch, letters.index("H"), letters.index("W"), letters.index("C"), has_batch, source)


# -- options ------------------------------------------------------------------------------------


def parse_color_format(value: Any) -> str | None:
    """None (keep the decoded channels, as OVMS), "BGR", "RGB" or "GRAY". OVMS's pair form
    "RGB:BGR" (target:source) is accepted: the model takes the first part."""
    if value is None or value == "":
        return None
    if not isinstance(value, str):
        raise ValueError(f"color_format must be a string (BGR, RGB or GRAY), got {value!r}")
    target = value.split(":", 1)[0].strip().upper()
    if target not in COLOR_CHANNELS:
        raise ValueError(f"color_format {value!r} is not supported for binary images: use BGR, RGB or GRAY")
    return target


def parse_per_channel(key: str, value: Any, channels: int | None) -> np.ndarray | None:
    """`mean` / `scale`: one number for every channel, or one per channel."""
    if value is None:
        return None
    items = value if isinstance(value, (list, tuple)) else [value]
    if not items or not all(isinstance(v, numbers.Real) and not isinstance(v, bool) for v in items):
        raise ValueError(f"{key} must be a number or a list of numbers, got {value!r}")
    if len(items) != 1:
        if channels is None:
            raise ValueError(
                f"{key} has {len(items)} values, but the input's channel count is not fixed; give one number"
            )
        if len(items) != channels:
            raise ValueError(f"{key} has {len(items)} values, but the input has {channels} channel(s)")
    array = np.array(items, dtype=np.float64)
    if key == "scale" and not np.all(array):
        raise ValueError(f"scale may not contain 0, got {value!r}")
    return array


def parse_max_pixels(value: Any, server_max_pixels: int = DEFAULT_MAX_PIXELS) -> tuple[int, str]:
    """The model's pixel limit and where it comes from. A model may lower the server's limit, not
    raise it: OpenCV's own guard was set from the server's limit when it loaded."""
    if value is None:
        source = ENV_MAX_PIXELS if server_max_pixels != DEFAULT_MAX_PIXELS else "the default"
        return server_max_pixels, f"{source}, {server_max_pixels}"
    if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
        raise ValueError(f"max_pixels must be a positive integer, got {value!r}")
    if value > server_max_pixels:
        raise ValueError(
            f"max_pixels {value} is above the server's limit of {server_max_pixels} pixels; "
            f"raise {ENV_MAX_PIXELS} to allow it"
        )
    return value, f"the model's max_pixels, {value}"


# -- the plugin objects -------------------------------------------------------------------------


class ImagePreprocessor(Preprocessor):
    """Claims the 4-D numeric inputs that OVMS fed binary images to."""

    #: the server-wide pixel limit, set by the plugin's `dropin_configure` hook at start-up
    server_max_pixels: int = DEFAULT_MAX_PIXELS

    def __init__(self) -> None:
        # Decoding runs in the data plane's worker threads, one image per thread, next to the
        # backend's own threads; OpenCV's internal threads would only fight them for the cores.
        cv2.setNumThreads(1)

    def claim(self, spec: TensorSpec, options: Mapping[str, Any]) -> ImageConverter | None:
        if spec.rank != 4 or spec.dtype not in IMAGE_DTYPES:
            return None
        name = spec.name
        color = parse_color_format(input_option(options, "color_format", name))
        wanted_channels = COLOR_CHANNELS.get(color) if color else None
        layout = resolve_layout(spec, input_option(options, "layout", name), wanted_channels)
        if layout is None:
            return None
        c_dim = spec.shape[layout.channels]
        if wanted_channels and not c_dim.accepts(wanted_channels):
            raise ValueError(
                f"color_format {color} gives {wanted_channels} channel(s), but input {name} takes {c_dim} "
                f"(shape {spec.shape_text()}, layout {layout.letters})"
            )
        channels = wanted_channels or (c_dim.low if c_dim.is_static else None)
        mean = parse_per_channel("mean", input_option(options, "mean", name), channels)
        scale = parse_per_channel("scale", input_option(options, "scale", name), channels)
        if (mean is not None or scale is not None) and spec.dtype not in FLOAT_DTYPES:
            raise ValueError(f"mean and scale need a floating-point input; {name} is {spec.dtype.value}")
        max_pixels, limit_source = parse_max_pixels(options.get("max_pixels"), self.server_max_pixels)
        converter = ImageConverter(spec, layout, color, mean, scale, max_pixels, limit_source)
        log.info(
            "input %s %s %s: takes encoded images (%s)", name, spec.dtype.value, spec.shape_text(), converter.describe()
        )
        return converter


class ImageConverter(InputConverter):
    """Decodes the images of one model input; immutable, shared by all request threads."""

    blocking = True

    def __init__(
        self,
        spec: TensorSpec,
        layout: ImageLayout,
        color: str | None,
        mean: np.ndarray | None,
        scale: np.ndarray | None,
        max_pixels: int,
        limit_source: str,
    ) -> None:
        self.spec = spec
        self.layout = layout
        self.color = color
        self.height = spec.shape[layout.height]
        self.width = spec.shape[layout.width]
        self.channels = spec.shape[layout.channels]
        self.batch = spec.shape[layout.batch] if layout.has_batch else None
        # OVMS resized only when it knew the target size; a -1 batch does not hide it (see README)
        self.resize = not (self.height.is_dynamic or self.width.is_dynamic)
        self.dtype = spec.dtype.numpy
        # mean/scale arithmetic runs in f32 for f16 models, then the batch is cast once
        self.work_dtype = (
            np.dtype(np.float32) if (mean is not None or scale is not None) and spec.dtype is DType.FP16 else self.dtype
        )
        self.mean = None if mean is None else mean.astype(self.work_dtype)
        self.scale = None if scale is None else scale.astype(self.work_dtype)
        self.max_pixels = max_pixels
        self.limit_source = limit_source

    def describe(self) -> str:
        parts = [f"layout {self.layout.letters} ({self.layout.source})"]
        parts.append(
            f"resized to {self.height}x{self.width}" if self.resize else "not resized (dynamic height or width)"
        )
        parts.append(f"colour {self.color}" if self.color else "channels as decoded (BGR order), no conversion")
        if self.mean is not None:
            parts.append(f"mean {self.mean.tolist()}")
        if self.scale is not None:
            parts.append(f"scale {self.scale.tolist()}")
        parts.append(f"at most {self.max_pixels} pixels")
        return "; ".join(parts)

    # -- per request (in a worker thread) --------------------------------------------------------

    def convert(self, name: str, shape: tuple[int, ...], values: np.ndarray) -> np.ndarray:
        count = check_binary_batch(name, shape, values, self.batch)
        headers = [self._header(name, i, value) for i, value in enumerate(values)]
        first = headers[0]
        height = _target(self.height, first.height)
        width = _target(self.width, first.width)
        if count * height * width > self.max_pixels:
            raise DropinError(
                Status.TOO_MANY_ELEMENTS,
                f"{count} images of {width}x{height} make {count * height * width} pixels, more than the limit "
                f"({self.limit_source}); input name: {name}",
            )

        out: np.ndarray | None = None
        view: np.ndarray | None = None  # `out` seen as NHWC
        first_size: tuple[int, int] = (0, 0)
        for i, value in enumerate(values):
            image = self._decode(name, i, value, headers[i])
            size = (image.shape[0], image.shape[1])
            if i == 0:
                first_size = size
            elif not self.resize and size != first_size:
                raise DropinError(BINARY_IMAGES_RESOLUTION_MISMATCH)
            if self.color:
                image = _convert_color(image, self.color)
            if view is None:
                if not self.channels.accepts(image.shape[2]):
                    raise DropinError(INVALID_NO_OF_CHANNELS)
            elif image.shape[2] != view.shape[3]:
                raise DropinError(INVALID_NO_OF_CHANNELS)
            if size != (height, width):
                if not self.resize:
                    raise DropinError(
                        Status.INVALID_SHAPE,
                        f"Expected: {self.spec.shape_text()}; Actual: "
                        f"{format_shape(self._model_shape(count, size[0], size[1], image.shape[2]))}; "
                        f"input name: {name}",
                    )
                image = cv2.resize(image, (width, height), interpolation=cv2.INTER_LINEAR)
                if image.ndim == 2:
                    image = image[:, :, None]
            if view is None:
                out = np.empty(self._model_shape(count, height, width, image.shape[2]), self.work_dtype)
                view = out.transpose(self.layout.nhwc_axes)
            _store(view, i, image)
        assert out is not None and view is not None
        if self.mean is not None:
            view -= self.mean
        if self.scale is not None:
            view /= self.scale
        if out.dtype != self.dtype:
            out = out.astype(self.dtype)
        return out

    def _model_shape(self, n: int, h: int, w: int, c: int) -> tuple[int, ...]:
        dims = [0, 0, 0, 0]
        layout = self.layout
        dims[layout.batch], dims[layout.height], dims[layout.width], dims[layout.channels] = n, h, w, c
        return tuple(dims)

    def _header(self, name: str, index: int, value: bytes) -> ImageHeader:
        try:
            header = read_header(value)
        except HeaderError as exc:
            raise DropinError(IMAGE_PARSING_FAILED, f"{exc}; batch index: {index}; input name: {name}") from None
        if header.pixels > self.max_pixels:
            raise DropinError(
                Status.TOO_MANY_ELEMENTS,
                f"the {header.format} header declares {header.width}x{header.height} = {header.pixels} pixels, more "
                f"than the limit ({self.limit_source}); batch index: {index}; input name: {name}",
            )
        return header

    def _decode(self, name: str, index: int, value: bytes, header: ImageHeader) -> np.ndarray:
        try:
            image = cv2.imdecode(np.frombuffer(value, np.uint8), cv2.IMREAD_UNCHANGED)
        except cv2.error:
            image = None
        if image is None or image.size == 0:
            raise DropinError(
                IMAGE_PARSING_FAILED,
                f"the {header.format} data could not be decoded; batch index: {index}; input name: {name}",
            )
        return image if image.ndim == 3 else image[:, :, None]


def _target(dim: Dim, size: int) -> int:
    """The size an image dim becomes: a static dim's value, the image's size inside a range (or
    a fully dynamic dim), else the nearer bound of the range (OVMS: 90 px into [100~200] -> 100)."""
    if dim.is_static:
        return dim.low
    if dim.accepts(size):
        return size
    if dim.high is not None and size > dim.high:
        return dim.high
    return dim.low


def _convert_color(image: np.ndarray, color: str) -> np.ndarray:
    channels = image.shape[2]
    if channels == 2:  # gray + alpha, when a decoder keeps it so: the gray plane
        image, channels = image[:, :, :1], 1
    if color == "GRAY":
        code = _TO_GRAY.get(channels)
    elif color == "BGR":
        code = _TO_BGR.get(channels)
    else:
        code = _TO_RGB.get(channels)
    if code is None:
        if channels == COLOR_CHANNELS[color]:
            return image
        raise DropinError(INVALID_NO_OF_CHANNELS)
    converted = cv2.cvtColor(image, code)
    return converted if converted.ndim == 3 else converted[:, :, None]


def _store(view: np.ndarray, index: int, image: np.ndarray) -> None:
    """Write one HWC image into the batch, casting as OpenCV's convertTo does (integers saturate)."""
    target = view.dtype
    if target.kind in "iu" and image.dtype.kind in "iu" and np.iinfo(image.dtype).max > np.iinfo(target).max:
        image = np.minimum(image, np.iinfo(target).max).astype(image.dtype, copy=False)
    view[index] = image
