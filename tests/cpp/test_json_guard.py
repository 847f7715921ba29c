"""The untrusted-JSON rules, C++ (json_guard.h through the C ABI) against Python (json_guard.py).

Random byte strings built from the pieces UTF-8 validity turns on (continuation bytes, lead bytes
at the edges of table 3-7, surrogates, overlongs, 4-byte sequences): the C++ offset of the first
bad byte must be Python's UnicodeDecodeError.start, and valid strings must pass both.
"""

from __future__ import annotations

import ctypes
import random

import pytest

from vlfront.runtime import json_guard
from vlfront_ctypes import CppError

PIECES = [b"a", b"\x80", b"\xbf", b"\xc0", b"\xc1", b"\xc2", b"\xdf", b"\xe0", b"\xa0", b"\x9f", b"\xed",
          b"\xee", b"\xef", b"\xf0", b"\x90", b"\x8f", b"\xf4", b"\xf5", b"\xff", "é".encode(), "世".encode(),
          "😀".encode(), "\ud7ff".encode(), "\U0010ffff".encode()]


def cpp_message(cpp_lib, body: bytes) -> str | None:
    handle = ctypes.c_void_p()
    try:
        cpp_lib.check(cpp_lib.lib.vlf_request_create_from_json(body, len(body), ctypes.byref(handle)))
    except CppError as e:
        return e.message
    cpp_lib.lib.vlf_request_destroy(handle)
    return None


def test_utf8_offsets_match_python(cpp_lib):
    rng = random.Random(9)
    checked = 0
    for _ in range(3000):
        s = b"".join(rng.choice(PIECES) for _ in range(rng.randint(1, 6)))
        body = b'[{"role": "user", "content": "' + s + b'"}]'
        try:
            body.decode("utf-8")
        except UnicodeDecodeError as e:
            want = f"the request is not valid UTF-8: byte 0x{body[e.start]:02x} at offset {e.start}"
            with pytest.raises(json_guard.JsonRefused, match="not valid UTF-8") as py_err:
                json_guard.loads(body, "the request")
            assert str(py_err.value) == want
            assert cpp_message(cpp_lib, body) == want, body
            checked += 1
        else:
            json_guard.loads(body, "the request")
            assert cpp_message(cpp_lib, body) is None, body
    assert checked > 1000


@pytest.mark.parametrize("depth, refused", [(64, False), (65, True)])
def test_depth_limit_is_64_in_both(cpp_lib, depth, refused):
    body = b"[" * depth + b"]" * depth
    message = "the request nests arrays/objects deeper than 64 levels"
    if refused:
        with pytest.raises(json_guard.JsonRefused, match=message):
            json_guard.loads(body, "the request")
        assert cpp_message(cpp_lib, body) == message
    else:
        json_guard.loads(body, "the request")
        assert cpp_message(cpp_lib, body) != message  # refused later, for its content


def test_brackets_inside_strings_do_not_count(cpp_lib):
    body = b'[{"role": "user", "content": "' + b"[{" * 1000 + b'"}]'
    json_guard.loads(body, "the request")
    assert cpp_message(cpp_lib, body) is None


def test_deep_tokenizer_json_refused_by_both(cpp_tokenize_bin, tmp_path):
    """A fuzz finding: a 100,000-deep value in tokenizer.json overflowed the C++ stack (dump in a message)."""
    import subprocess

    from vlfront.errors import TokenizerError
    from vlfront.runtime.tokenizer import read_tokenizer_json

    path = tmp_path / "tokenizer.json"
    path.write_text('{"model": {"type": "BPE", "vocab": {"a": ' + "[" * 100_000 + "]" * 100_000 + '}, "merges": []}}')
    with pytest.raises(TokenizerError, match="JSON nested too deeply; not a tokenizer.json"):
        read_tokenizer_json(path)
    run = subprocess.run([str(cpp_tokenize_bin), str(path)], input=b'"hi"\n', capture_output=True, timeout=60)
    assert run.returncode == 1 and b"JSON nested too deeply; not a tokenizer.json" in run.stderr, run
