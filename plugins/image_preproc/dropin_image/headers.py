"""What an encoded image is and how large it says it is, read from its first bytes only.

The server decodes only formats it knows here, and only after the header's width and height
passed the pixel limit, so that a small file that claims a huge image (a decompression bomb)
never allocates its pixels. Nothing here decodes pixels or imports OpenCV.

Accepted: JPEG, PNG, BMP, WebP and the binary/ASCII Netpbm formats (PBM, PGM, PPM). Refused,
although OpenCV could decode them: JPEG 2000 (a long history of decoder vulnerabilities),
TIFF, OpenEXR, Radiance HDR, GIF, AVIF, PAM, PFM and Sun raster (large decoders, rarely sent
to a model server; each would need its own header reader here).
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

ACCEPTED = "JPEG, PNG, BMP, WebP, PBM, PGM or PPM"


class HeaderError(ValueError):
    """The bytes are not an image this module accepts; the message says why."""


@dataclass(frozen=True)
class ImageHeader:
    format: str
    width: int
    height: int

    @property
    def pixels(self) -> int:
        return self.width * self.height


def read_header(data: bytes) -> ImageHeader:
    """The format and declared size of an encoded image; HeaderError when it is not one we accept
    or its header is broken."""
    head = bytes(data[:16])
    if head.startswith(b"\xff\xd8\xff"):
        width, height = _jpeg_size(data)
        return _checked("JPEG", width, height)
    if head.startswith(b"\x89PNG\r\n\x1a\n"):
        return _checked("PNG", *_png_size(data))
    if head.startswith(b"BM"):
        return _checked("BMP", *_bmp_size(data))
    if head.startswith(b"RIFF") and head[8:12] == b"WEBP":
        return _checked("WebP", *_webp_size(data))
    if len(head) >= 3 and head[0:1] == b"P" and head[1:2] in b"123456" and head[2:3] in b" \t\r\n#":
        return _checked(("PBM", "PGM", "PPM")[(head[1] - ord("1")) % 3], *_pnm_size(data))
    raise HeaderError(f"{_refused_name(head)}; accepted: {ACCEPTED}")


def _checked(fmt: str, width: int, height: int) -> ImageHeader:
    if width <= 0 or height <= 0:
        raise HeaderError(f"the {fmt} header declares an empty image ({width}x{height})")
    return ImageHeader(fmt, width, height)


def _refused_name(head: bytes) -> str:
    """Name formats that we recognise but refuse, so that the client learns why."""
    if head.startswith(b"\xff\x4f\xff\x51") or head.startswith(b"\x00\x00\x00\x0cjP  \r\n\x87\n"):
        return "JPEG 2000 is not accepted"
    if head[:4] in (b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+"):
        return "TIFF is not accepted"
    if head.startswith(b"GIF8"):
        return "GIF is not accepted"
    if head.startswith(b"v/1\x01"):
        return "OpenEXR is not accepted"
    if head.startswith(b"#?RADIANCE") or head.startswith(b"#?RGBE"):
        return "Radiance HDR is not accepted"
    if head[4:8] == b"ftyp":
        return "AVIF/HEIF is not accepted"
    if head[:2] in (b"P7", b"Pf", b"PF"):
        return "PAM/PFM is not accepted"
    if head.startswith(b"\x59\xa6\x6a\x95"):
        return "Sun raster is not accepted"
    return "not an image format the server decodes"


# -- PNG: signature, then the IHDR chunk: length 13, "IHDR", width and height big-endian ------


def _png_size(data: bytes) -> tuple[int, int]:
    if len(data) < 24 or data[12:16] != b"IHDR":
        raise HeaderError("broken PNG: no IHDR chunk")
    width, height = struct.unpack(">II", data[16:24])
    return width, height


# -- JPEG: walk the marker segments up to the first start-of-frame ----------------------------

# SOF0..SOF15 except DHT (C4), JPG (C8) and DAC (CC)
_SOF = frozenset(range(0xC0, 0xD0)) - {0xC4, 0xC8, 0xCC}
_STANDALONE = frozenset(range(0xD0, 0xD8)) | {0x01}


def _jpeg_size(data: bytes) -> tuple[int, int]:
    end = len(data)
    i = 2
    while i < end:
        if data[i] != 0xFF:
            raise HeaderError("broken JPEG: a segment does not start with a marker")
        while i < end and data[i] == 0xFF:  # fill bytes
            i += 1
        if i >= end:
            break
        marker = data[i]
        i += 1
        if marker in _STANDALONE:
            continue
        if marker in (0xD9, 0xDA):  # end of image, or scan data before any frame header
            break
        if i + 2 > end:
            break
        length = (data[i] << 8) | data[i + 1]
        if length < 2:
            raise HeaderError("broken JPEG: a segment with an impossible length")
        if marker in _SOF:
            if i + 7 > end:
                break
            height = (data[i + 3] << 8) | data[i + 4]
            width = (data[i + 5] << 8) | data[i + 6]
            if height == 0:
                raise HeaderError("JPEG with the height given after the scan (DNL) is not accepted")
            return width, height
        i += length
    raise HeaderError("broken JPEG: no frame header")


# -- BMP: file header (14 bytes), then the DIB header: its size, then width and height -------


def _bmp_size(data: bytes) -> tuple[int, int]:
    if len(data) < 26:
        raise HeaderError("broken BMP: header too short")
    (dib,) = struct.unpack("<I", data[14:18])
    if dib == 12:  # BITMAPCOREHEADER: 16-bit sizes
        width, height = struct.unpack("<HH", data[18:22])
        return width, height
    if dib < 40 or len(data) < 26:
        raise HeaderError("broken BMP: unknown header")
    width, height = struct.unpack("<ii", data[18:26])
    return width, abs(height)  # a negative height means top-down rows


# -- WebP: RIFF container; the first chunk is VP8 (lossy), VP8L (lossless) or VP8X (extended) --


def _webp_size(data: bytes) -> tuple[int, int]:
    if len(data) < 30:
        raise HeaderError("broken WebP: header too short")
    chunk = data[12:16]
    if chunk == b"VP8X":  # canvas size minus one, 24 bits each, little-endian
        width = 1 + int.from_bytes(data[24:27], "little")
        height = 1 + int.from_bytes(data[27:30], "little")
        return width, height
    if chunk == b"VP8L":  # signature 0x2f, then 14 bits width-1, 14 bits height-1
        if data[20] != 0x2F:
            raise HeaderError("broken WebP: bad lossless signature")
        bits = int.from_bytes(data[21:25], "little")
        return 1 + (bits & 0x3FFF), 1 + ((bits >> 14) & 0x3FFF)
    if chunk == b"VP8 ":  # frame tag (3 bytes), start code 9d 01 2a, then 14-bit sizes
        if data[23:26] != b"\x9d\x01\x2a":
            raise HeaderError("broken WebP: bad lossy start code")
        width, height = struct.unpack("<HH", data[26:30])
        return width & 0x3FFF, height & 0x3FFF
    raise HeaderError("broken WebP: unknown first chunk")


# -- Netpbm: "P1".."P6", then width and height as ASCII, with comments and whitespace ---------


def _pnm_size(data: bytes) -> tuple[int, int]:
    numbers: list[int] = []
    i, end = 2, min(len(data), 4096)
    while len(numbers) < 2 and i < end:
        c = data[i]
        if c == ord("#"):
            while i < end and data[i] not in (0x0A, 0x0D):
                i += 1
        elif 0x30 <= c <= 0x39:
            j = i
            while j < end and 0x30 <= data[j] <= 0x39:
                j += 1
            if j - i > 9:
                raise HeaderError("broken Netpbm header: a size with too many digits")
            numbers.append(int(data[i:j]))
            i = j
            continue
        elif c not in b" \t\r\n\x0b\x0c":
            raise HeaderError("broken Netpbm header")
        i += 1
    if len(numbers) < 2:
        raise HeaderError("broken Netpbm header: no width and height")
    return numbers[0], numbers[1]
