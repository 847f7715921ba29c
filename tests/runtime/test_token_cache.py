"""VisualTokenCache: what it keeps is private and read-only, copied unless the caller hands it over."""

from __future__ import annotations

import numpy as np

from vlfront.runtime.cache import VisualTokenCache


def arrays(writeable: bool):
    buf = bytearray(np.arange(196 * 8, dtype=np.float32).tobytes() + bytes(range(256)) * 588)
    tokens = np.frombuffer(buf, np.float32, count=196 * 8).reshape(196, 8)
    pixels = np.frombuffer(buf, np.uint8, offset=tokens.nbytes).reshape(224, 224, 3)
    tokens.flags.writeable = pixels.flags.writeable = writeable
    return buf, tokens, pixels


def test_put_copies_by_default_so_later_edits_change_nothing():
    cache = VisualTokenCache(1 << 20)
    buf, tokens, pixels = arrays(writeable=True)
    want = tokens.copy()
    cache.put(b"k", tokens, pixels)
    tokens[0, 0] = -1.0
    entry = cache.get(b"k")
    assert np.array_equal(entry.visual_tokens, want)
    assert not entry.visual_tokens.flags.writeable and not entry.pixel_values.flags.writeable
    assert not np.shares_memory(entry.visual_tokens, buf)


def test_owned_read_only_arrays_are_kept_without_a_copy():
    cache = VisualTokenCache(1 << 20)
    buf, tokens, pixels = arrays(writeable=False)
    cache.put(b"k", tokens, pixels, owned=True)
    entry = cache.get(b"k")
    assert entry.visual_tokens is tokens and entry.pixel_values is pixels
    assert cache.bytes == tokens.nbytes + pixels.nbytes


def test_owned_is_ignored_for_arrays_that_could_still_change():
    cache = VisualTokenCache(1 << 20)
    buf, tokens, pixels = arrays(writeable=True)
    cache.put(b"k", tokens, pixels[:, ::2], owned=True)  # writeable, and a strided view
    entry = cache.get(b"k")
    assert entry.visual_tokens is not tokens and not np.shares_memory(entry.visual_tokens, buf)
    assert entry.pixel_values.flags.c_contiguous and not entry.pixel_values.flags.writeable
    assert np.array_equal(entry.pixel_values, pixels[:, ::2])
    cache.put(b"f64", tokens.astype(np.float64), pixels, owned=True)  # another dtype: converted
    assert cache.get(b"f64").visual_tokens.dtype == np.float32
