"""Property tests of the parsers that take untrusted bytes: tokenizer.json and image headers.

Mutated tokenizer files (structure and raw bytes) must load or raise TokenizerError; mutated
image headers must decode or raise ImageError. Nothing else, and bounded (database off,
a few hundred examples each).
"""

from __future__ import annotations

import copy
import io
import json
import os

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from vlfront.config import QWEN_PATTERN, SPECIAL_TOKENS
from vlfront.errors import ImageError, TokenizerError
from vlfront.runtime.images import ImageLimits, ImageSource
from vlfront.runtime.tokenizer import BYTE_TO_UNICODE, Tokenizer

# VLFRONT_FUZZ_EXAMPLES=5000 make test: a longer run
SETTINGS = settings(max_examples=int(os.environ.get("VLFRONT_FUZZ_EXAMPLES", "150")), deadline=None, database=None,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])


def small_tokenizer_json() -> dict:
    """A valid, rank-consistent byte-level BPE file: 256 bytes, 3 merges, the SPEC specials."""
    vocab = {BYTE_TO_UNICODE[b]: b for b in range(256)}
    merges = []
    for a, b in (("h", "e"), ("l", "l"), ("he", "ll")):
        merges.append(f"{a} {b}")
        vocab[a + b] = len(vocab)
    return {
        "version": "1.0",
        "added_tokens": [{"id": i, "content": s, "special": True} for i, s in SPECIAL_TOKENS.items()],
        "normalizer": {"type": "NFC"},
        "pre_tokenizer": {"type": "Sequence", "pretokenizers": [
            {"type": "Split", "pattern": {"Regex": QWEN_PATTERN}, "behavior": "Isolated", "invert": False},
            {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": True, "use_regex": False}]},
        "model": {"type": "BPE", "dropout": None, "unk_token": None, "continuing_subword_prefix": None,
                  "end_of_word_suffix": None, "fuse_unk": False, "byte_fallback": False, "ignore_merges": True,
                  "vocab": vocab, "merges": merges},
    }


BASE = small_tokenizer_json()


def test_the_small_tokenizer_is_valid(tmp_path):
    path = tmp_path / "t.json"
    path.write_text(json.dumps(BASE))
    tok = Tokenizer.from_file(path)
    assert tok.backend == "tiktoken" and tok.encode("hello") == [258, 111]  # "hell" "o"


def _paths(node, prefix=()):
    yield prefix
    if isinstance(node, dict):
        for k, v in node.items():
            yield from _paths(v, prefix + (k,))
    elif isinstance(node, list):
        for i, v in enumerate(node[:20]):
            yield from _paths(v, prefix + (i,))


_PATHS = [p for p in _paths(BASE) if p and not (len(p) == 3 and p[:2] == ("model", "vocab") and p[2] not in
                                                ("h", "e", "he", "ll", "hell", "l"))]
_values = st.one_of(st.none(), st.booleans(), st.integers(-2, 200_000), st.floats(allow_nan=False),
                    st.text(max_size=6), st.lists(st.text(max_size=3), max_size=3),
                    st.builds(dict), st.builds(list))  # fresh objects: a shared {} could be put inside itself


def _load_and_encode(path) -> None:
    try:
        tok = Tokenizer.from_file(path)
        ids = tok.encode("hello <|im_start|> 123")
        assert all(isinstance(i, int) for i in ids)
    except TokenizerError:
        pass


@SETTINGS
@given(data=st.data())
def test_mutated_tokenizer_json_raises_only_tokenizer_errors(tmp_path, data):
    doc = copy.deepcopy(BASE)
    for _ in range(data.draw(st.integers(1, 3))):
        path = data.draw(st.sampled_from(_PATHS))
        node = doc
        try:
            for p in path[:-1]:
                node = node[p]
            if isinstance(node, dict) and data.draw(st.booleans()):
                node.pop(path[-1], None)
            else:
                node[path[-1]] = data.draw(_values)
        except (KeyError, IndexError, TypeError):
            continue
    f = tmp_path / "mutated.json"
    f.write_text(json.dumps(doc))
    _load_and_encode(f)


_RAW = json.dumps(BASE).encode()


@SETTINGS
@given(cut=st.integers(0, len(_RAW)), flips=st.lists(st.tuples(st.integers(0, len(_RAW) - 1),
                                                                st.integers(0, 255)), max_size=4))
def test_corrupted_tokenizer_bytes_raise_only_tokenizer_errors(tmp_path, cut, flips):
    raw = bytearray(_RAW)
    for pos, byte in flips:
        raw[pos] = byte
    f = tmp_path / "raw.json"
    f.write_bytes(bytes(raw[: max(cut, 1)] if cut < len(raw) // 2 else raw))
    _load_and_encode(f)


# -- image headers -------------------------------------------------------------------------

def _encoded(fmt: str) -> bytes:
    rng = np.random.default_rng(0)
    im = Image.fromarray(rng.integers(0, 255, (24, 32, 3), dtype=np.uint8))
    buf = io.BytesIO()
    im.save(buf, format=fmt)
    return buf.getvalue()


FORMATS = {fmt: _encoded(fmt) for fmt in ("PNG", "JPEG", "GIF", "BMP", "WEBP", "TIFF")}
LIMITS = ImageLimits()


@SETTINGS
@given(fmt=st.sampled_from(sorted(FORMATS)), header=st.integers(8, 64),
       flips=st.lists(st.tuples(st.integers(0, 63), st.integers(0, 255)), min_size=1, max_size=6),
       cut=st.one_of(st.none(), st.integers(0, 200)))
def test_mutated_image_headers_decode_or_raise_image_error(fmt, header, flips, cut):
    data = bytearray(FORMATS[fmt])
    for pos, byte in flips:
        if pos < min(header, len(data)):
            data[pos] = byte
    if cut is not None:
        data = data[:cut]
    try:
        px = ImageSource(bytes(data), 224, LIMITS, 0, "image 0").decode()
    except ImageError as e:
        assert str(e).startswith("request 0: ")
        return
    assert px.shape == (224, 224, 3) and px.dtype == np.uint8


@pytest.mark.parametrize("fmt", sorted(FORMATS))
def test_unmutated_images_decode(fmt):
    px = ImageSource(FORMATS[fmt], 224, LIMITS, 0, "image 0").decode()
    assert px.shape == (224, 224, 3)
