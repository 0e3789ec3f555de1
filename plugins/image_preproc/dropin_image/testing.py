"""Encoded images for tests of the image plugin: real files encoded with OpenCV, and a PNG whose
header claims any size."""

from __future__ import annotations

import struct
import zlib

import numpy as np


def encode(ext: str, image: np.ndarray, params: tuple[int, ...] = ()) -> bytes:
    """`image` encoded as `ext` (".png", ".jpg", ...) with OpenCV's `params`."""
    import cv2

    ok, data = cv2.imencode(ext, image, list(params))
    assert ok
    return data.tobytes()


def png_claiming(width: int, height: int, bit_depth: int = 8, color_type: int = 2) -> bytes:
    """A PNG whose IHDR claims width x height, with a valid CRC and a tiny IDAT: a decompression
    bomb's header (the real ones deflate gigabytes of zeros into a few kilobytes)."""
    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    ihdr = struct.pack(">IIBBBBB", width, height, bit_depth, color_type, 0, 0, 0)
    idat = zlib.compress(b"\x00" * 64)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", idat) + chunk(b"IEND", b"")
