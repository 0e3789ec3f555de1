"""The dropin plugin module: what entry point `image` in group "dropin" points at.

dropin loads it explicitly at start-up and calls its hooks: the vocabulary (the model keys
color_format, mean, scale and max_pixels, the flags --color_format, --mean and --scale, and the
image errors), the configuration (the server's pixel limit), then the registration of the
preprocessor, which is made once, at the first model load, and is then asked to claim every
model input (see `dropin/preprocess.py` for the contract), and of the custom node that crops
detected boxes (`detection_crop.py`). OpenCV is imported by those last hooks only, after the
limit it reads when it loads was set.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import pluggy

from . import errors
from . import options as image_options

if TYPE_CHECKING:
    from dropin.custom_nodes import CustomNode
    from dropin.preprocess import Preprocessor
    from dropin.registry import Registry
    from dropin.vocabulary import Vocabulary

hookimpl = pluggy.HookimplMarker("dropin")


@hookimpl
def dropin_declare_vocabulary(vocabulary: Vocabulary) -> None:
    vocabulary.model_key(
        "color_format", check=image_options.check_color_format, flag=True, metavar="BGR|RGB|GRAY",
        help="convert binary images to these channels (default: as decoded, BGR order)",
    )
    check, from_text = image_options.check_mean_or_scale, image_options.number_or_list
    vocabulary.model_key(
        "mean", check=check, flag=True, from_text=from_text, metavar="NUMBERS",
        help="subtracted from binary images' pixels: a number or a JSON list, one per channel",
    )
    vocabulary.model_key(
        "scale", check=check, flag=True, from_text=from_text, metavar="NUMBERS",
        help="binary images' pixels are divided by it, after mean: a number or a JSON list, one per channel",
    )
    vocabulary.model_key(
        "max_pixels", check=image_options.check_max_pixels, help="this model's largest image, in pixels"
    )
    for status in errors.ALL:
        vocabulary.error(status)


@hookimpl
def dropin_configure(options: Mapping[str, Any]) -> None:
    limit = image_options.server_max_pixels()
    # OpenCV's own guard, read once when its library loads, unless the operator set it (then a
    # lower value of theirs wins at decode): a second guard behind the header check (headers.py)
    os.environ.setdefault("OPENCV_IO_MAX_IMAGE_PIXELS", str(limit))
    from .preprocessor import ImagePreprocessor

    ImagePreprocessor.server_max_pixels = limit


@hookimpl
def dropin_register_preprocessors(registry: Registry[Preprocessor]) -> None:
    from .preprocessor import ImagePreprocessor

    registry.add("image", ImagePreprocessor)


@hookimpl
def dropin_register_custom_nodes(registry: Registry[CustomNode]) -> None:
    from .detection_crop import DetectionCrop

    # the name an OVMS config.json's libcustom_node_model_zoo_intel_object_detection.so resolves to
    registry.add("model_zoo_intel_object_detection", DetectionCrop)
