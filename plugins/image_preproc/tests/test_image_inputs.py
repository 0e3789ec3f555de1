"""Binary image inputs end to end: a real `dropin serve` with the image plugin, images
encoded with OpenCV, the server's tensors compared with OpenCV + OpenVINO run directly on the
same decoded images, every image error with its code and message, decompression bombs, and the
demo model called with ovmsclient and with tensorflow-serving-api (in a subprocess)."""

from __future__ import annotations

import json
import re
import time
from pathlib import Path

import cv2
import grpc
import numpy as np
import pytest

from dropin.testing.client import outputs_of, predict_request
from dropin.testing.server import DropinServer
from dropin_image import DEFAULT_MAX_PIXELS
from dropin_image.testing import encode, image_error, png_claiming, predict, reference
from dropin_openvino import modelgen

ROOT = Path(__file__).resolve().parents[3]
DIGITS = [(ROOT / "examples" / "digits" / f"digit_{n}.png").read_bytes() for n in range(10)]
INVALID = grpc.StatusCode.INVALID_ARGUMENT
F32 = {"INFERENCE_PRECISION_HINT": "f32"}

# name -> (builder arguments, extra config options)
MODELS: dict[str, tuple[dict, dict]] = {
    "nhwc": ({"shape": (1, 16, 16, 3)}, {}),
    "nchw": ({"shape": (-1, 3, 16, 16), "layout": "NCHW"}, {}),
    "nchw_inferred": ({"shape": (2, 3, 12, 10)}, {}),
    "ovms_layout": ({"shape": (1, 3, 16, 16)}, {"layout": "NHWC:NCHW"}),  # OVMS's fix: the backend transposes
    "gray": ({"shape": (-1, 8, 8, 1)}, {}),
    "gray_convert": ({"shape": (-1, 8, 8, 1)}, {"color_format": "GRAY"}),
    "rgb": ({"shape": (1, 6, 5, 3)}, {"color_format": "RGB", "mean": [10.0, 20.0, 30.0], "scale": [2.0, 4.0, 8.0]}),
    "bgr_convert": ({"shape": (-1, 3, 6, 5), "layout": "NCHW"}, {"color_format": "BGR"}),
    "dyn": ({"shape": (-1, -1, -1, 3)}, {}),
    "range": ({"shape": (1, (10, 20), (10, 20), 3)}, {}),
    "strip": ({"shape": (1, 8, -1, 1)}, {}),
    "any_c": ({"shape": (-1, 4, 4, -1)}, {}),
    "u8": ({"shape": (1, 8, 8, 3), "dtype": "u8"}, {}),
    "nobatch": ({"shape": (1, 8, 8, 3), "layout": "?HWC"}, {}),
    "small": ({"shape": (-1, 16, 16, 3)}, {"max_pixels": 300}),
    "bad_color": ({"shape": (1, 8, 8, 3)}, {"color_format": "NV12"}),
    "too_big": ({"shape": (1, 8, 8, 3)}, {"max_pixels": DEFAULT_MAX_PIXELS * 4}),
}
FAILING = {"bad_color", "too_big"}

@pytest.fixture(scope="module")
def repo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("images")
    entries = []
    for name, (build, options) in MODELS.items():
        dtype = modelgen.IDENTITY_TYPES.get(build.get("dtype", "fp32"), modelgen.F32)
        modelgen.image_model(root / name / "1", build["shape"], build.get("layout"), dtype)
        entries.append({"config": {"name": name, "base_path": name, "plugin_config": F32, **options}})
    modelgen.conv_image_model(root / "conv" / "1")
    entries.append({"config": {"name": "conv", "base_path": "conv", "plugin_config": F32}})
    (root / "config.json").write_text(json.dumps({"model_config_list": entries}))
    return root


@pytest.fixture(scope="module")
def server(repo: Path):
    srv = DropinServer(["--config_path", str(repo / "config.json"), "--file_system_poll_wait_seconds", "0"])
    try:
        for name in [*MODELS, "conv"]:
            srv.wait_for(name, 1, state=20 if name in FAILING else 30)
        yield srv
    finally:
        srv.stop()


def color(h: int, w: int, channels: int = 3, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (h, w, channels), dtype=np.uint8)


def smooth(h: int, w: int, seed: int = 0) -> np.ndarray:
    """A photo-like image (gradients), which JPEG keeps close to the original."""
    y, x = np.mgrid[0:h, 0:w]
    phase = np.random.default_rng(seed).random(3) * 6
    return np.stack([(127 + 120 * np.sin(x / 5 + y / 7 + p)) for p in phase], axis=-1).astype(np.uint8)


# -- decoding, resizing, layouts ------------------------------------------------------------------


@pytest.mark.parametrize("ext", [".png", ".jpg", ".bmp", ".webp", ".ppm"])
def test_color_image_in_bgr_order_exactly_as_opencv_decodes(server: DropinServer, repo: Path, ext: str) -> None:
    data = encode(ext, smooth(16, 16))
    got = predict(server, "nhwc", [data])["y"]
    expected = reference([data], 16, 16)
    np.testing.assert_array_equal(got, expected)
    np.testing.assert_array_equal(got, modelgen.run_openvino(repo / "nhwc" / "1", {"x": expected})["y"])
    if ext == ".png":  # lossless: the exact pixels, BGR as OpenCV holds them
        np.testing.assert_array_equal(got[0], smooth(16, 16))


@pytest.mark.parametrize("size", [(32, 24), (7, 9), (16, 40)])
def test_images_are_resized_to_the_model(server: DropinServer, size: tuple[int, int]) -> None:
    data = encode(".jpg", smooth(*size))
    np.testing.assert_array_equal(predict(server, "nhwc", [data])["y"], reference([data], 16, 16))


def test_nchw_model_takes_a_batch_of_mixed_formats_and_sizes(server: DropinServer, repo: Path) -> None:
    images = [
        encode(".png", color(16, 16, seed=1)),
        encode(".jpg", smooth(20, 30, seed=2)),
        encode(".png", color(9, 9, seed=3)),
    ]
    got = predict(server, "nchw", images)["y"]
    assert got.shape == (3, 3, 16, 16)
    np.testing.assert_array_equal(got, reference(images, 16, 16, nchw=True))
    # a real network on the same decoded images, run by OpenVINO directly
    conv = predict(server, "conv", images)["y"]
    expected = modelgen.run_openvino(repo / "conv" / "1", {"x": reference(images, 16, 16, nchw=True)})["y"]
    np.testing.assert_allclose(conv, expected, rtol=1e-5, atol=1e-5)


def test_nchw_layout_is_inferred_from_the_shape(server: DropinServer) -> None:
    images = [encode(".png", color(12, 10, seed=4)), encode(".png", color(24, 20, seed=5))]
    np.testing.assert_array_equal(predict(server, "nchw_inferred", images)["y"], reference(images, 12, 10, nchw=True))
    image_error(
        server, "nchw_inferred", images[:1], INVALID, "Invalid input batch size - Expected: 2; Actual: 1; input name: x"
    )


def test_ovms_layout_option_still_works(server: DropinServer) -> None:
    data = encode(".png", color(20, 16, seed=17))
    np.testing.assert_array_equal(predict(server, "ovms_layout", [data])["y"], reference([data], 16, 16, nchw=True))
    server.wait_for_log(re.escape("input x FP32 (1,16,16,3): takes encoded images (layout NHWC (model)"))


def test_grayscale_images(server: DropinServer) -> None:
    gray = color(8, 8, 1, seed=6)
    images = [encode(".png", gray), encode(".jpg", gray), encode(".pgm", gray)]
    got = predict(server, "gray", images)["y"]
    np.testing.assert_array_equal(got, reference(images, 8, 8))
    np.testing.assert_array_equal(got[0], gray)


def test_channels_are_strict_by_default_as_in_ovms(server: DropinServer) -> None:
    image_error(server, "gray", [encode(".png", color(8, 8))], INVALID, "Invalid number of channels in binary input")
    image_error(
        server, "nhwc", [encode(".png", color(16, 16, 1))], INVALID, "Invalid number of channels in binary input"
    )
    image_error(
        server, "nhwc", [encode(".png", color(16, 16, 4))], INVALID, "Invalid number of channels in binary input"
    )


def test_color_format_converts_channels(server: DropinServer) -> None:
    bgr = color(8, 8, seed=7)
    got = predict(server, "gray_convert", [encode(".png", bgr), encode(".png", bgr[:, :, :1])])["y"]
    np.testing.assert_array_equal(got[0, :, :, 0], cv2.cvtColor(bgr, cv2.COLOR_BGR2GRAY))
    np.testing.assert_array_equal(got[1, :, :, 0], bgr[:, :, 0])
    bgra = color(6, 5, 4, seed=8)
    got = predict(server, "bgr_convert", [encode(".png", bgra), encode(".png", bgra[:, :, :1])])["y"]
    np.testing.assert_array_equal(got[0], bgra[:, :, :3].transpose(2, 0, 1))
    np.testing.assert_array_equal(got[1], np.repeat(bgra[None, :, :, 0], 3, axis=0))


def test_rgb_with_mean_and_scale(server: DropinServer) -> None:
    bgr = color(6, 5, seed=9)
    got = predict(server, "rgb", [encode(".png", bgr)])["y"]
    expected = (bgr[:, :, ::-1].astype(np.float32) - np.array([10, 20, 30], np.float32)) / np.array(
        [2, 4, 8], np.float32
    )
    np.testing.assert_allclose(got[0], expected, rtol=1e-6)
    got = predict(server, "rgb", [encode(".png", bgr[:, :, :1])])["y"]  # gray -> RGB, then normalised
    np.testing.assert_allclose(got[0, :, :, 0], (bgr[:, :, 0] - 10.0) / 2.0, rtol=1e-6)


def test_dynamic_height_and_width_take_the_first_image(server: DropinServer) -> None:
    images = [encode(".png", color(5, 7, seed=10)), encode(".png", color(5, 7, seed=11))]
    np.testing.assert_array_equal(predict(server, "dyn", images)["y"], reference(images, 5, 7))
    image_error(server, "dyn", [images[0], encode(".png", color(7, 5))], INVALID,
                "Binary input images for this endpoint are required to have the same resolution")


@pytest.mark.parametrize(
    "size,target", [((8, 8), (10, 10)), ((15, 30), (15, 20)), ((12, 12), (12, 12)), ((25, 5), (20, 10))]
)
def test_range_dims_clamp_to_the_nearer_bound(server: DropinServer, size, target) -> None:
    data = encode(".png", color(*size, seed=12))
    got = predict(server, "range", [data])["y"]
    assert got.shape == (1, *target, 3)
    np.testing.assert_array_equal(got, reference([data], *target))


def test_no_resize_with_a_dynamic_dim(server: DropinServer) -> None:
    data = encode(".png", color(8, 20, 1))
    np.testing.assert_array_equal(predict(server, "strip", [data])["y"], reference([data], 8, 20))
    image_error(server, "strip", [encode(".png", color(10, 20, 1))], INVALID,
                "Invalid input shape - Expected: (1,8,-1,1); Actual: (1,10,20,1); input name: x")


def test_dynamic_channels_take_the_first_image(server: DropinServer) -> None:
    four = [encode(".png", color(4, 4, 4, seed=13)), encode(".png", color(4, 4, 4, seed=14))]
    np.testing.assert_array_equal(predict(server, "any_c", four)["y"], reference(four, 4, 4))
    image_error(
        server,
        "any_c",
        [four[0], encode(".png", color(4, 4, 3))],
        INVALID,
        "Invalid number of channels in binary input",
    )


def test_cast_to_the_model_precision(server: DropinServer) -> None:
    data = encode(".png", color(8, 8, seed=15))
    got = predict(server, "u8", [data])["y"]
    assert got.dtype == np.uint8
    np.testing.assert_array_equal(got[0], color(8, 8, seed=15))
    sixteen = (color(16, 16, seed=16).astype(np.uint16) * 257)
    got = predict(server, "nhwc", [encode(".png", sixteen)])["y"]
    np.testing.assert_array_equal(got[0], sixteen.astype(np.float32))  # no scaling, as OVMS


# -- errors (plugins/image_preproc/README.md) -----------------------------------------------------


def test_string_tensor_errors(server: DropinServer) -> None:
    png = encode(".png", color(16, 16))
    image_error(
        server,
        "nhwc",
        [png],
        INVALID,
        "Invalid number of shape dimensions - Expected number of binary input shape dimensions: 1; Actual: 2; "
        "input name: x",
        shape=[1, 1],
    )
    image_error(server, "nhwc", [png], INVALID, "Invalid input batch size", shape=[2])
    image_error(server, "nhwc", [png, png], INVALID, "Invalid input batch size - Expected: 1; Actual: 2; input name: x")
    image_error(
        server,
        "nchw",
        [],
        INVALID,
        "Invalid input shape - Negative or zero dimension size is not acceptable: (0); input name: x",
        shape=[0],
    )
    image_error(server, "nobatch", [png], INVALID, "Invalid input batch size - Batch not present in input name: x")
    image_error(server, "nchw", [png, b""], INVALID, "String val is empty")


def test_undecodable_bytes(server: DropinServer) -> None:
    accepted = "accepted: JPEG, PNG, BMP, WebP, PBM, PGM or PPM"
    image_error(
        server,
        "nchw",
        [encode(".png", color(16, 16)), b"garbage"],
        INVALID,
        f"Image parsing failed - not an image format the server decodes; {accepted}; batch index: 1; input name: x",
    )
    jp2 = encode(".jp2", color(64, 64))
    image_error(
        server,
        "nchw",
        [jp2],
        INVALID,
        f"Image parsing failed - JPEG 2000 is not accepted; {accepted}; batch index: 0; input name: x",
    )
    truncated = encode(".png", color(16, 16))[:60]
    image_error(server, "nchw", [truncated], INVALID,
                "Image parsing failed - the PNG data could not be decoded; batch index: 0; input name: x")


def peak_memory_kib(server: DropinServer) -> int:
    return int(Path(f"/proc/{server.proc.pid}/status").read_text().split("VmHWM:")[1].split()[0])


def test_decompression_bomb_is_refused_before_decoding(server: DropinServer) -> None:
    before = peak_memory_kib(server)
    image_error(
        server,
        "nchw",
        [png_claiming(100000, 100000)],
        grpc.StatusCode.RESOURCE_EXHAUSTED,
        f"Request is too large - the PNG header declares 100000x100000 = 10000000000 pixels, more than the limit "
        f"(the default, {DEFAULT_MAX_PIXELS}); batch index: 0; input name: x",
    )
    image_error(server, "small", [encode(".png", color(20, 20))], grpc.StatusCode.RESOURCE_EXHAUSTED,
                "Request is too large - the PNG header declares 20x20 = 400 pixels, more than the limit "
                "(the model's max_pixels, 300); batch index: 0; input name: x")
    # the batch tensor counts too: many small images resized up are a bomb of their own
    tiny = encode(".png", color(2, 2))
    assert predict(server, "small", [tiny])["y"].shape == (1, 16, 16, 3)
    image_error(server, "small", [tiny, tiny], grpc.StatusCode.RESOURCE_EXHAUSTED,
                "Request is too large - 2 images of 16x16 make 512 pixels, more than the limit "
                "(the model's max_pixels, 300); input name: x")
    # 10 G pixels would have been 30 GB: the server's peak memory did not move
    assert peak_memory_kib(server) - before < 20_000
    np.testing.assert_array_equal(predict(server, "gray", [DIGITS[0]])["y"].shape, (1, 8, 8, 1))


def test_concurrent_requests_get_their_own_images(server: DropinServer) -> None:
    from concurrent.futures import ThreadPoolExecutor

    batches = [[encode(".jpg", smooth(24, 20, seed=i)), encode(".png", color(16, 16, seed=i))] for i in range(12)]
    with ThreadPoolExecutor(6) as pool:
        results = list(pool.map(lambda images: predict(server, "nchw", images)["y"], batches))
    for images, got in zip(batches, results, strict=True):
        np.testing.assert_array_equal(got, reference(images, 16, 16, nchw=True))


def test_bad_image_options_fail_the_load_with_the_reason(server: DropinServer) -> None:
    for name, reason in [("bad_color", "color_format 'NV12' is not supported for binary images"),
                         ("too_big", "is above the server's limit")]:
        deadline = time.monotonic() + 30
        while (status := server.status(name).model_version_status[0]).status.error_code != 2:
            assert time.monotonic() < deadline, status
            time.sleep(0.05)
        assert status.state == 20  # LOADING, with the reason
        assert reason in status.status.error_message
        server.wait_for_log(re.escape(reason))


def test_numeric_tensors_still_bypass_the_plugin(server: DropinServer) -> None:
    x = np.arange(16 * 16 * 3, dtype=np.float32).reshape(1, 16, 16, 3)
    got = outputs_of(server.predict.Predict(predict_request("nhwc", {"x": x}), timeout=20))["y"]
    np.testing.assert_array_equal(got, x)
