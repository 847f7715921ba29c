"""glibc malloc settings for decoding large images in a thread pool.

Pillow holds a decoded photo in blocks of up to 16 MB (a 12 MP RGB photo is
48 MB). With glibc's defaults, memory freed after each decode is handed back
to the kernel (the trim threshold follows the mmap threshold, 128 KB..64 MB,
and per-thread arenas trim their heaps), so the next decode faults every page
in again and the kernel zeroes it: measured 12,617 minor faults (~50 MB) per
4032x3024 decode, in the caller's thread and in the decode pool (docs/images.md).
Keeping up to `TRIM_BYTES` free at the top of each arena removes them (0 faults
per decode after the first), at the cost of holding that much freed memory per
malloc arena (the main one and one per decode thread) until it is reused.

The settings are process-wide. They are applied once, on Linux/glibc only, and
not when the user already chose them (MALLOC_TRIM_THRESHOLD_ /
MALLOC_MMAP_THRESHOLD_ / MALLOC_TOP_PAD_ in the environment, or
VLFRONT_MALLOC_TUNING=0 to opt out).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import sys
import threading

M_TRIM_THRESHOLD = -1
M_MMAP_THRESHOLD = -3
TRIM_BYTES = 128 << 20  # keeps one 12 MP decode's worth (48 MB in Pillow) plus its temporaries per arena
MMAP_BYTES = 32 << 20  # glibc's largest; Pillow's 16 MB blocks stay in the heap where they are reused

_lock = threading.Lock()
_state: dict[str, object] = {}


def tune_malloc() -> bool:
    """Apply the settings once per process; return whether they are in effect."""
    with _lock:
        if "applied" in _state:
            return bool(_state["applied"])
        _state["applied"] = _apply()
        return bool(_state["applied"])


def _apply() -> bool:
    if not sys.platform.startswith("linux") or os.environ.get("VLFRONT_MALLOC_TUNING", "1") == "0":
        return False
    if any(k in os.environ for k in ("MALLOC_TRIM_THRESHOLD_", "MALLOC_MMAP_THRESHOLD_", "MALLOC_TOP_PAD_")):
        return False  # the user tuned malloc already
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):  # musl and others: no mallopt
        return False
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    return bool(mallopt(M_TRIM_THRESHOLD, TRIM_BYTES)) and bool(mallopt(M_MMAP_THRESHOLD, MMAP_BYTES))
