"""dropin-image: decodes binary (encoded image) inputs for dropin, as OVMS did (see plugin.py,
preprocessor.py and headers.py).

Importing the package does nothing but define names: the plugin reads its settings when the
server calls its `dropin_configure` hook, and OpenCV is imported only when its preprocessor is
registered (plugin.py).
"""

from __future__ import annotations

#: default largest image, as its header declares it: 64 Mi pixels (e.g. 8192x8192)
DEFAULT_MAX_PIXELS = 64 * 1024 * 1024
#: the server-wide ceiling, read at start-up; a model may set a lower limit with its key "max_pixels"
ENV_MAX_PIXELS = "DROPIN_IMAGE_MAX_PIXELS"
