"""Big JSON string values (>= 64 KiB: long texts, base64 images) are decoded by json_guard's own
decoder in C++, not by nlohmann (runtime/cpp/src/json_guard.h, lift_big_strings): the same values
as Python's json module, escapes and all, and the same refusals as nlohmann on the whole text."""

from __future__ import annotations

import base64
import ctypes
import json
import pathlib

import numpy as np
import pytest
import skimage

import vlfront_ctypes
from vlfront_ctypes import CppError

DATA = pathlib.Path(skimage.__file__).parent / "data"
BIG = 64 * 1024


def process_json(cpp, body: str, monkeypatch) -> dict:
    """C++ process() of one request given as its exact JSON text (not re-dumped by json.dumps)."""
    with monkeypatch.context() as m:
        m.setattr(vlfront_ctypes, "request_json", lambda r: r)
        return cpp.process([body])


def test_escaped_text_decodes_as_python(runtimes, monkeypatch):
    """~100k characters (encoded in full, so every token counts) written with every JSON escape:
    \\uXXXX for non-ASCII (surrogate pairs for emoji), \\n \\t \\" \\\\ \\/ and \\u0041."""
    py, cpp = runtimes
    piece = 'Grüße, 世界 😀 "quoted" back\\slash a/b\ttab\nnew line. '
    text = (piece * (100_000 // len(piece)))[:100_000]
    body = json.dumps({"messages": [{"role": "user", "content": text}]})  # ensure_ascii: \\u escapes
    body = body.replace("a/b", "a\\/b").replace("tab", "t\\u0061b")
    assert len(body) > 2 * BIG and json.loads(body)["messages"][0]["content"] == text
    got = process_json(cpp, body, monkeypatch)
    want = py.embed([{"messages": [{"role": "user", "content": text}]}])
    np.testing.assert_array_equal(got["input_ids"], want.input_ids)
    assert list(got["dropped_tokens"]) == list(want.dropped_tokens) and want.dropped_tokens[0] > 0


def test_base64_image_with_escaped_slashes_same_pixels(runtimes, monkeypatch):
    py, cpp = runtimes
    data = (DATA / "rocket.jpg").read_bytes()
    b64 = base64.b64encode(data).decode()
    assert len(b64) > BIG and "/" in b64
    body = ('{"messages": [{"role": "user", "content": [{"type": "image", "image": {"base64": "'
            + b64.replace("/", "\\/") + '"}}]}]}')
    got = process_json(cpp, body, monkeypatch)
    plain = process_json(cpp, body.replace("\\/", "/"), monkeypatch)
    np.testing.assert_array_equal(got["pixel_values"], plain["pixel_values"])  # same bytes decoded
    want = py.embed([{"messages": [{"role": "user", "content": [{"type": "image", "image": data}]}]}])
    np.testing.assert_array_equal(got["input_ids"], want.input_ids)
    assert (np.abs(got["pixel_values"].astype(np.int16) - want.pixel_values.astype(np.int16)) <= 1).mean() >= 0.999


@pytest.mark.parametrize("bad, kind", [("\x01", "control character"), ("\\ud800x", "surrogate"),
                                       ("\\q", "escape")])
def test_bad_big_string_refused_as_nlohmann_words_it(cpp_lib, bad, kind):
    """A big literal that does not decode goes back to nlohmann whole: its reason, at its offset."""
    head = '{"messages": [{"role": "user", "content": "'
    body = (head + "a" * BIG + bad + "a" * 10 + '"}]}').encode()
    handle = ctypes.c_void_p()
    with pytest.raises(CppError) as err:
        cpp_lib.check(cpp_lib.lib.vlf_request_create_from_json(body, len(body), ctypes.byref(handle)))
    msg = err.value.message
    assert msg.startswith("the request is not valid JSON: "), msg
    small = (head + bad + "a" * 10 + '"}]}').encode()
    with pytest.raises(CppError) as small_err:
        cpp_lib.check(cpp_lib.lib.vlf_request_create_from_json(small, len(small), ctypes.byref(handle)))
    # the same reason as the same defect in a small string, its offset moved by the BIG bytes before it
    reason, _, offset = msg.rpartition(" at offset ")
    small_reason, _, small_offset = small_err.value.message.rpartition(" at offset ")
    assert reason == small_reason and int(offset) == int(small_offset) + BIG, (msg, small_err.value.message)
