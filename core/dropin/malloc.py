"""glibc's allocator, tuned for request-sized buffers (called once at server start)."""

from __future__ import annotations

import ctypes
import os

# glibc mallopt parameters
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3
MMAP_THRESHOLD = 32 << 20  # glibc's maximum on 64-bit
TRIM_THRESHOLD = 256 << 20


def tune_malloc() -> bool:
    """Keep request-sized buffers in the heap. glibc serves every allocation over 128 KiB with
    its own mmap and gives it back after use, so each image-sized request pays page faults and
    zeroing again (measured: ~3x slower for 600 KB tensors). Raising the mmap and trim
    thresholds makes those buffers reusable. GLIBC_TUNABLES set by the operator wins; not glibc:
    nothing to do. True when the thresholds were raised."""
    if "malloc." in os.environ.get("GLIBC_TUNABLES", ""):
        return False
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):
        return False
    return bool(mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD)) and bool(mallopt(_M_TRIM_THRESHOLD, TRIM_THRESHOLD))
