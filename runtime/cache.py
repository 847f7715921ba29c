"""Visual-token cache: LRU, bounded in bytes, thread-safe.

Keys are the 32-byte digests that `ImageSource.key` computes over an image's
exact bytes (or pixels), so a crafted collision cannot hand one user another
user's image. A hit skips decoding and the patch-embedding graph.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class CacheEntry:
    visual_tokens: np.ndarray  # float32 [196, D], read-only
    pixel_values: np.ndarray  # uint8 [224, 224, 3], read-only

    @property
    def nbytes(self) -> int:
        return self.visual_tokens.nbytes + self.pixel_values.nbytes


class VisualTokenCache:
    """LRU of CacheEntry by key, holding at most `max_bytes` of arrays (0 disables it)."""

    def __init__(self, max_bytes: int = 256 * 1024 * 1024):
        if max_bytes < 0:
            raise ValueError(f"max_bytes={max_bytes} must be >= 0")
        self.max_bytes = max_bytes
        self._entries: OrderedDict[bytes, CacheEntry] = OrderedDict()
        self._lock = threading.Lock()
        self.bytes = 0
        self.hits = self.misses = self.evictions = 0

    def get(self, key: bytes) -> CacheEntry | None:
        with self._lock:
            entry = self._entries.get(key)
            if entry is None:
                self.misses += 1
                return None
            self._entries.move_to_end(key)
            self.hits += 1
            return entry

    def put(self, key: bytes, visual_tokens: np.ndarray, pixel_values: np.ndarray, *, owned: bool = False) -> None:
        """Keep private read-only copies; with owned=True, arrays that are already read-only, C-ordered
        float32/uint8 and referenced by no one else (a shared-cache value's views) are kept as they are."""
        vt, px = (_kept(visual_tokens, np.float32, owned), _kept(pixel_values, np.uint8, owned))
        entry = CacheEntry(vt, px)
        if entry.nbytes > self.max_bytes:
            return
        with self._lock:
            old = self._entries.pop(key, None)
            if old is not None:
                self.bytes -= old.nbytes
            self._entries[key] = entry
            self.bytes += entry.nbytes
            while self.bytes > self.max_bytes:
                _, evicted = self._entries.popitem(last=False)
                self.bytes -= evicted.nbytes
                self.evictions += 1

    def __len__(self) -> int:
        with self._lock:
            return len(self._entries)

    def stats(self) -> dict[str, int]:
        with self._lock:
            return {"entries": len(self._entries), "bytes": self.bytes, "max_bytes": self.max_bytes,
                    "hits": self.hits, "misses": self.misses, "evictions": self.evictions}

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()
            self.bytes = 0


def _kept(a: np.ndarray, dtype, owned: bool) -> np.ndarray:
    if not (owned and a.dtype == dtype and not a.flags.writeable and a.flags.c_contiguous):
        a = np.array(a, dtype, copy=True)
        a.flags.writeable = False
    return a
