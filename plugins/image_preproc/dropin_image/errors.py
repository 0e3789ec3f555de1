"""The errors only the image plugin raises, with OVMS's base messages, codes and statuses.

Declared to dropin by plugin.py (`dropin_declare_vocabulary`); raised as
`DropinError(IMAGE_PARSING_FAILED, "details")`, so clients see "<base message> - <details>".
"""

from __future__ import annotations

import grpc

from dropin.errors import ErrorStatus

IMAGE_PARSING_FAILED = ErrorStatus(
    "IMAGE_PARSING_FAILED", "Image parsing failed", grpc.StatusCode.INVALID_ARGUMENT, 400
)
INVALID_NO_OF_CHANNELS = ErrorStatus(
    "INVALID_NO_OF_CHANNELS", "Invalid number of channels in binary input", grpc.StatusCode.INVALID_ARGUMENT, 400
)
BINARY_IMAGES_RESOLUTION_MISMATCH = ErrorStatus(
    "BINARY_IMAGES_RESOLUTION_MISMATCH",
    "Binary input images for this endpoint are required to have the same resolution",
    grpc.StatusCode.INVALID_ARGUMENT,
    400,
)

ALL = (IMAGE_PARSING_FAILED, INVALID_NO_OF_CHANNELS, BINARY_IMAGES_RESOLUTION_MISMATCH)
