"""The image plugin's parts without a server: header reading (formats, sizes, refusals, bombs),
layout resolution, option parsing, and the converter on arrays."""

from __future__ import annotations

import struct

import cv2
import numpy as np
import pytest

from dropin.dtypes import DType
from dropin.errors import DropinError, Status
from dropin.shapes import TensorSpec
from dropin_image import DEFAULT_MAX_PIXELS
from dropin_image.headers import HeaderError, read_header
from dropin_image.preprocessor import (
    ImagePreprocessor,
    infer_letters,
    parse_color_format,
    parse_max_pixels,
    parse_per_channel,
    resolve_layout,
)
from dropin_image.testing import encode, png_claiming

RNG = np.random.default_rng(7)


# -- headers --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "ext,fmt,channels,params",
    [
        (".jpg", "JPEG", 3, ()),
        (".jpg", "JPEG", 1, ()),
        (".jpg", "JPEG", 3, (cv2.IMWRITE_JPEG_PROGRESSIVE, 1)),
        (".png", "PNG", 3, ()),
        (".png", "PNG", 4, ()),
        (".png", "PNG", 1, ()),
        (".bmp", "BMP", 3, ()),
        (".webp", "WebP", 3, (cv2.IMWRITE_WEBP_QUALITY, 80)),
        (".webp", "WebP", 3, (cv2.IMWRITE_WEBP_QUALITY, 101)),
        (".ppm", "PPM", 3, ()),
        (".pgm", "PGM", 1, ()),
        (".pgm", "PGM", 1, (cv2.IMWRITE_PXM_BINARY, 0)),
        (".pbm", "PBM", 1, ()),
    ],
)
def test_header_sizes_of_accepted_formats(ext: str, fmt: str, channels: int, params: tuple[int, ...]) -> None:
    image = RNG.integers(0, 256, (13, 17, channels), dtype=np.uint8)
    header = read_header(encode(ext, image, params))
    assert (header.format, header.width, header.height) == (fmt, 17, 13)


def test_bmp_top_down_and_webp_extended_headers() -> None:
    bmp = bytearray(encode(".bmp", RNG.integers(0, 256, (5, 6, 3), dtype=np.uint8)))
    bmp[22:26] = struct.pack("<i", -5)  # top-down rows: negative height
    assert (read_header(bytes(bmp)).width, read_header(bytes(bmp)).height) == (6, 5)
    vp8x = (
        b"RIFF\x00\x00\x00\x00WEBPVP8X\x0a\x00\x00\x00\x10\x00\x00\x00"
        + (1999).to_bytes(3, "little")
        + (2999).to_bytes(3, "little")
    )
    assert (read_header(vp8x).width, read_header(vp8x).height) == (2000, 3000)


@pytest.mark.parametrize(
    "data,reason",
    [
        (b"not an image at all", "not an image format the server decodes"),
        (b"\x00\x00\x00\x0cjP  \r\n\x87\n" + b"\x00" * 20, "JPEG 2000 is not accepted"),
        (b"\xff\x4f\xff\x51" + b"\x00" * 20, "JPEG 2000 is not accepted"),
        (b"II*\x00" + b"\x00" * 20, "TIFF is not accepted"),
        (b"GIF89a" + b"\x00" * 20, "GIF is not accepted"),
        (b"#?RADIANCE\n" + b"\x00" * 20, "Radiance HDR is not accepted"),
        (b"\x89PNG\r\n\x1a\n\x00\x00", "broken PNG"),
        (b"\xff\xd8\xff\xe0\x00\x10JFIF\x00", "broken JPEG: no frame header"),
        (b"\xff\xd8\xff\xd9", "broken JPEG: no frame header"),
        (b"P6\n# only a comment", "broken Netpbm header"),
    ],
)
def test_refused_and_broken_headers(data: bytes, reason: str) -> None:
    with pytest.raises(HeaderError, match=reason):
        read_header(data)


def test_real_jpeg2000_and_tiff_files_are_refused() -> None:
    image = RNG.integers(0, 256, (64, 64, 3), dtype=np.uint8)
    with pytest.raises(HeaderError, match="JPEG 2000"):
        read_header(encode(".jp2", image))
    with pytest.raises(HeaderError, match="TIFF"):
        read_header(encode(".tiff", image))


def test_headers_report_bomb_sizes_without_decoding() -> None:
    assert read_header(png_claiming(100000, 100000)).pixels == 10**10
    sof = b"\xff\xd8\xff\xc0\x00\x11\x08" + struct.pack(">HH", 65000, 65000) + b"\x03" + b"\x00" * 9
    assert read_header(sof).pixels == 65000 * 65000
    with pytest.raises(HeaderError, match="empty image"):
        read_header(png_claiming(0, 10))


# -- layout and options ---------------------------------------------------------------------------


def spec(shape, layout=None, dtype=DType.FP32) -> TensorSpec:
    return TensorSpec.of("x", dtype, shape, layout)


@pytest.mark.parametrize(
    "shape,channels,letters",
    [
        ((1, 224, 224, 3), None, "NHWC"),
        ((1, 3, 224, 224), None, "NCHW"),
        ((-1, 1, 28, 28), None, "NCHW"),
        ((-1, 28, 28, 1), None, "NHWC"),
        ((1, 3, 3, 3), None, "NHWC"),  # ambiguous: OVMS's reading
        ((-1, -1, -1, -1), None, "NHWC"),
        ((1, 3, 8, 1), 3, "NCHW"),  # color_format says 3 channels
        ((1, 1, 8, 3), 1, "NCHW"),
    ],
)
def test_layout_inference(shape, channels, letters: str) -> None:
    assert infer_letters(spec(shape).shape, channels) == letters


def test_layout_sources_in_order() -> None:
    model = resolve_layout(spec((1, 3, 8, 8), "NCHW"), "NHWC")
    assert (model.letters, model.source, model.nhwc_axes) == ("NCHW", "model", (0, 2, 3, 1))
    option = resolve_layout(spec((1, 8, 3, 8)), "NHCW:NCHW")  # the client side of OVMS's pair
    assert (option.letters, option.source) == ("NHCW", "layout option")
    partial = resolve_layout(spec((1, 3, 8, 8), "N..."), None)
    assert (partial.letters, partial.source) == ("NCHW", "inferred")
    no_batch = resolve_layout(spec((1, 8, 8, 3), "?HWC"), None)
    assert (no_batch.has_batch, no_batch.batch) == (False, 0)
    assert resolve_layout(spec((8, 8, 3)), None) is None


def test_option_parsing() -> None:
    assert parse_color_format(None) is None
    assert parse_color_format("rgb") == "RGB"
    assert parse_color_format("GRAY:BGR") == "GRAY"
    with pytest.raises(ValueError, match="use BGR, RGB or GRAY"):
        parse_color_format("NV12")
    assert parse_per_channel("mean", 127.5, 3).tolist() == [127.5]
    assert parse_per_channel("mean", [1, 2, 3], 3).tolist() == [1, 2, 3]
    with pytest.raises(ValueError, match="has 2 values, but the input has 3"):
        parse_per_channel("mean", [1, 2], 3)
    with pytest.raises(ValueError, match="may not contain 0"):
        parse_per_channel("scale", [1, 0, 1], 3)
    with pytest.raises(ValueError, match="number or a list"):
        parse_per_channel("scale", "x", 3)
    assert parse_max_pixels(None) == (DEFAULT_MAX_PIXELS, f"the default, {DEFAULT_MAX_PIXELS}")
    assert parse_max_pixels(1000)[0] == 1000
    with pytest.raises(ValueError, match="above the server's limit"):
        parse_max_pixels(DEFAULT_MAX_PIXELS + 1)


def test_claims_only_4d_inputs_of_image_types() -> None:
    pre = ImagePreprocessor()
    assert pre.claim(spec((1, 8, 8, 3)), {}) is not None
    assert pre.claim(spec((1, 8, 8, 3), dtype=DType.U8), {}) is not None
    assert pre.claim(spec((1, 8, 8, 3), dtype=DType.I64), {}) is None
    assert pre.claim(spec((1, 64)), {}) is None
    with pytest.raises(ValueError, match="color_format GRAY gives 1 channel"):
        pre.claim(spec((1, 8, 8, 3)), {"color_format": "GRAY"})
    with pytest.raises(ValueError, match="floating-point"):
        pre.claim(spec((1, 8, 8, 3), dtype=DType.U8), {"mean": 1})
    converter = pre.claim(spec((1, 8, 8, 3)), {"color_format": {"x": "RGB"}, "mean": {"x": [1, 2, 3]}})
    assert converter is not None and converter.color == "RGB" and converter.mean.tolist() == [1, 2, 3]


def test_converter_casts_saturate_and_fp16_mean_runs_in_f32() -> None:
    pre = ImagePreprocessor()
    image = np.full((4, 4, 3), 200, np.uint8)
    data = np.array([encode(".png", image)], dtype=object)
    i8 = pre.claim(spec((1, 4, 4, 3), dtype=DType.I8), {}).convert("x", (1,), data)
    assert i8.dtype == np.int8 and int(i8.max()) == 127  # OpenCV's convertTo saturates
    f16 = pre.claim(spec((1, 4, 4, 3), dtype=DType.FP16), {"mean": 100.0, "scale": 0.5}).convert("x", (1,), data)
    assert f16.dtype == np.float16 and float(f16.max()) == 200.0


def test_check_binary_batch_errors_are_dropin_errors() -> None:
    pre = ImagePreprocessor()
    converter = pre.claim(spec((1, 4, 4, 3)), {})
    with pytest.raises(DropinError) as info:
        converter.convert("x", (1,), np.array([b""], dtype=object))
    assert info.value.status is Status.STRING_VAL_EMPTY
