"""dropin-image: decodes binary (encoded image) inputs for dropin, as OVMS did (see plugin.py,
preprocessor.py and headers.py).

The pixel limit is read here, before OpenCV is imported: OpenCV reads its own limit,
OPENCV_IO_MAX_IMAGE_PIXELS, once, when its library loads, and that limit is a second guard
behind the header check in `headers.py`.
"""

from __future__ import annotations

import os as _os

#: default largest image, as its header declares it: 64 Mi pixels (e.g. 8192x8192)
DEFAULT_MAX_PIXELS = 64 * 1024 * 1024
ENV_MAX_PIXELS = "DROPIN_IMAGE_MAX_PIXELS"


def _server_max_pixels() -> int:
    text = _os.environ.get(ENV_MAX_PIXELS, "").strip()
    if not text:
        return DEFAULT_MAX_PIXELS
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value <= 0:
        raise ValueError(f"{ENV_MAX_PIXELS} must be a positive number of pixels, got {text!r}")
    return value


#: the server-wide ceiling: DROPIN_IMAGE_MAX_PIXELS, else 64 Mi pixels; a model may set a lower
#: limit with its option "max_pixels"
SERVER_MAX_PIXELS = _server_max_pixels()

# OpenCV's own guard, unless the operator set it (then a lower value of theirs wins at decode)
_os.environ.setdefault("OPENCV_IO_MAX_IMAGE_PIXELS", str(SERVER_MAX_PIXELS))
