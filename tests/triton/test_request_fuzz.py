"""The Triton request parser and the shared cache's value check, fuzzed: our error or a valid result, never a crash."""

from __future__ import annotations

import random

import numpy as np
import pytest

from triton_helpers import chat, random_png
from vlfront.errors import RequestError
from vlfront.runtime.shared_cache import SharedCache
from vlfront.runtime.triton.request import encode_request, encode_request_images, parse_request


def mutations(seed: bytes, n: int, rng: random.Random):
    for _ in range(n):
        data = bytearray(seed)
        for _ in range(rng.randint(1, 8)):
            op, at = rng.randrange(4), rng.randrange(len(data) + 1)
            if op == 0 and data:
                data[min(at, len(data) - 1)] = rng.randrange(256)
            elif op == 1:
                data[at:at] = bytes(rng.randrange(256) for _ in range(rng.randint(1, 4)))
            elif op == 2:
                del data[at : at + rng.randint(1, 16)]
            else:
                data[at:at] = rng.choice([b"[", b"{", b'"', b"\\u", b"\xed\xa0\x80", b'"image_base64":', b"null"])
        yield bytes(data)


def test_request_parser_fuzz():
    rng = random.Random(11)
    seed = encode_request(chat(random_png(1, 8), "fuzz me"))
    assert parse_request(seed)["messages"][0]["content"][0]["image"] == random_png(1, 8)
    outcomes = {"ok": 0, "refused": 0}
    for data in mutations(seed, 1500, rng):
        try:
            out = parse_request(data)
        except RequestError as e:
            assert str(e)  # a reason, never empty
            outcomes["refused"] += 1
        else:
            assert isinstance(out, dict) and isinstance(out["messages"], list)
            outcomes["ok"] += 1
    assert outcomes["refused"] > 100 and outcomes["ok"] > 10


@pytest.mark.parametrize("raw", [None, 5, ["x"], b"", "{}", "\ud800", b"\x00" * 10, b"[" * 70 + b"]" * 70])
def test_request_parser_odd_elements(raw):
    with pytest.raises(RequestError):
        parse_request(raw)


def test_request_parser_size_limit():
    with pytest.raises(RequestError, match="over the limit of 100 bytes"):
        parse_request(b" " * 101, max_bytes=100)


def test_shared_cache_value_check_fuzz():
    cache = SharedCache("redis://127.0.0.1:1/0", b"ns", (3, 4), (2, 2, 3))
    tokens = np.arange(12, dtype=np.float32).reshape(3, 4)
    pixels = np.arange(12, dtype=np.uint8).reshape(2, 2, 3)
    name = cache._name(b"k" * 32)
    value = cache._pack(name, tokens, pixels)
    got = cache._unpack(name, value)
    assert np.array_equal(got[0], tokens) and np.array_equal(got[1], pixels)
    assert cache._unpack(cache._name(b"j" * 32), value) is None  # another key
    rng = random.Random(3)
    for data in mutations(value, 500, rng):
        got = cache._unpack(name, data)
        assert got is None or data == value
    assert cache.corrupt >= 490


def test_request_parser_base64_is_strict_rfc4648():
    """pybase64 decodes (SIMD); it accepts what base64.b64decode(validate=True) accepts, with the same bytes,
    except padding after a complete quad, which it refuses."""
    import base64
    import os

    def item(b64: str) -> bytes:
        body = b'{"messages": [{"role": "user", "content": [{"type": "image", "image_base64": "%s"}]}]}' % b64.encode()
        return parse_request(body)["messages"][0]["content"][0]["image"]

    rng = random.Random(5)
    for n in [0, 1, 2, 3, 4, 5, 64, 1000] + [rng.randrange(5000) for _ in range(20)]:
        data = os.urandom(n)
        assert item(base64.b64encode(data).decode()) == data
    for bad in ["AAA", "A===", "AA=A", "AAAA=", "//B9=", "AAAA\\n", " AAAA", "AA-_", "AAA\u00e9"]:
        with pytest.raises(RequestError, match="image_base64 is not valid base64"):
            item(bad)


def test_request_parser_images_input():
    body, files = encode_request_images(chat(random_png(2, 8), "indexed"))
    assert parse_request(body, images=files)["messages"][0]["content"][0] == {"type": "image", "image": files[0]}
    item = b'{"messages": [{"role": "user", "content": [{"type": "image", "image_index": %s}]}]}'
    for index, reason in [(b"-1", "image_index -1 is out of range"), (b"9" * 4000, "image_index of 4000 digits is out"),
                          (b"0.0", "an image_index of type float"), (b'"0"', "an image_index of type str")]:
        with pytest.raises(RequestError, match=reason):
            parse_request(item % index, images=[b"x"])
    with pytest.raises(RequestError, match='element 0 of the "images" input is NoneType, not bytes'):
        parse_request(item % b"0", images=[None])
