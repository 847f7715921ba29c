"""OpenAI chat-completions shapes in the Python processor: the fields table, image_url items, data URLs."""

from __future__ import annotations

import base64
import json
import pathlib
import random

import numpy as np
import pytest
import skimage

from vlfront.config import preset
from vlfront.errors import ImageError, RequestError
from vlfront.runtime import openai_compat
from vlfront.runtime.processor import Processor

PNG = (pathlib.Path(skimage.__file__).parent / "data" / "astronaut.png").read_bytes()
DATA_URL = "data:image/png;base64," + base64.b64encode(PNG).decode()
TABLE = json.loads(openai_compat.FIELDS_FILE.read_text())


@pytest.fixture(scope="module")
def proc(qwen_tokenizer):
    return Processor(qwen_tokenizer, preset("tiny"))


def chat(*items):
    return [{"role": "system", "content": "Be brief."}, {"role": "user", "content": list(items)}]


def ours():
    return chat({"type": "image", "image": PNG}, {"type": "text", "text": "What is this?"})


def same(a, b):
    np.testing.assert_array_equal(a.input_ids, b.input_ids)
    np.testing.assert_array_equal(a.image_attention_mask, b.image_attention_mask)
    assert [s.key for s in a.images] == [s.key for s in b.images]


@pytest.mark.parametrize("item", [
    {"type": "image_url", "image_url": {"url": DATA_URL}},
    {"type": "image_url", "image_url": DATA_URL},
    {"type": "image_url", "image_url": "DATA:image/PNG;name=a.png;BASE64," + base64.b64encode(PNG).decode()},
    {"type": "image_url", "image_url": {"url": DATA_URL[:60] + "\n" + DATA_URL[60:]}},  # line breaks skipped
])
def test_image_url_is_the_same_image(proc, item):
    same(proc.layout(chat(item, {"type": "text", "text": "What is this?"})), proc.layout(ours()))
    assert proc.layout(chat(item)).images[0].decode().shape == (224, 224, 3)


def test_content_string_and_text_items_are_one_run(proc):
    a = proc.layout([{"role": "user", "content": "Hello there"}])
    b = proc.layout([{"role": "user", "content": [{"type": "text", "text": "Hello "}, {"type": "text", "text": "there"}]}])
    same(a, b)


@pytest.mark.parametrize("field", sorted(TABLE["request"]["ignored"]))
def test_ignored_fields_do_not_change_the_output(proc, field):
    body = {"messages": ours(), field: {"anything": [1, 2]}, "model": "qwen-vl"}
    same(proc.layout(body), proc.layout(ours()))


@pytest.mark.parametrize("field", sorted(TABLE["request"]["refused"]))
def test_refused_fields_say_why(proc, field):
    with pytest.raises(RequestError) as e:
        proc.layout({"messages": ours(), field: 1, "model": "x"}, 2)
    assert str(e.value) == f"request 2: '{field}' is refused: {TABLE['request']['refused'][field]} (docs/openai.md)"


def test_unknown_field_is_refused_as_a_typo(proc):
    with pytest.raises(RequestError, match=r"unknown request keys \['temprature'\]; allowed: "
                                           r"\['add_generation_prompt', 'messages'\] and the OpenAI fields"):
        proc.layout({"messages": ours(), "temprature": 0.5})


@pytest.mark.parametrize("key", sorted(TABLE["message"]["refused"]))
def test_refused_message_keys(proc, key):
    with pytest.raises(RequestError, match=f"message 0: '{key}' is refused: "):
        proc.layout([{"role": "user", "content": "hi", key: None}])


@pytest.mark.parametrize("kind", sorted(TABLE["item_types"]["refused"]))
def test_refused_item_types(proc, kind):
    with pytest.raises(RequestError, match=f"message 1, item 0: type '{kind}' is refused: "):
        proc.layout(chat({"type": kind, kind: {}}))


BAD_ITEMS = [
    ({"type": "image_url", "image_url": {"url": DATA_URL, "detail": "auto"}}, RequestError, "'detail' is refused"),
    ({"type": "image_url", "image_url": {"uri": DATA_URL}}, RequestError, r"exactly the key \['url'\], got \['uri'\]"),
    ({"type": "image_url", "image_url": {"url": 5}}, RequestError, "url must be a str, got int"),
    ({"type": "image_url", "image_url": 5}, RequestError, "must be a dict {'url': ...} or a str, got int"),
    ({"type": "image_url", "image_url": DATA_URL, "x": 1}, RequestError, "exactly the keys"),
    ({"type": "image_url", "image_url": "https://example.com/cat.png"}, RequestError, "remote https: URLs are not fetched"),
    ({"type": "image_url", "image_url": "HTTP://example.com/cat.png"}, RequestError, "remote http: URLs are not fetched"),
    ({"type": "image_url", "image_url": "file:///etc/passwd"}, RequestError, "file: URLs are never opened"),
    ({"type": "image_url", "image_url": "/etc/passwd"}, RequestError, "got a value that is not a URL"),
    ({"type": "image_url", "image_url": "ftp://x/y.png"}, RequestError, "got a URL of another scheme"),
    ({"type": "image_url", "image_url": "data:image/png;base64"}, RequestError, "has no ','"),
    ({"type": "image_url", "image_url": "data:text/html;base64,PGI+"}, RequestError, r"media type is not image/\*"),
    ({"type": "image_url", "image_url": "data:image/png,%89PNG"}, RequestError, "is not base64"),
    ({"type": "image_url", "image_url": "data:image/png;base64,iVBO R w0"}, ImageError, "not valid base64"),
    ({"type": "image_url", "image_url": "data:image/png;base64,iV=BO"}, ImageError, "not valid base64"),
    ({"type": "image_url", "image_url": "data:image/png;base64,"}, ImageError, "empty"),
    ({"type": "image_url", "image_url": "data:image/png;base64," + base64.b64encode(b"not a png").decode()},
     ImageError, "image 0"),
]


@pytest.mark.parametrize("item, error, match", BAD_ITEMS)
def test_bad_image_url_items(proc, item, error, match):
    with pytest.raises(error, match=match) as e:
        lay = proc.layout(chat(item), 1)
        for src in lay.images:
            src.decode()
    assert str(e.value).startswith("request 1: ")
    assert "example.com" not in str(e.value) and "passwd" not in str(e.value)  # no client value echoed


def test_base64_decode_follows_the_cpp_rules():
    rng = random.Random(0)
    for n in range(0, 40):
        data = bytes(rng.randrange(256) for _ in range(n))
        text = base64.b64encode(data).decode()
        assert openai_compat.base64_decode(text) == data
        assert openai_compat.base64_decode(text.rstrip("=")) == data  # padding is optional
    assert openai_compat.base64_decode("QUJD\r\nREVG") == b"ABCDEF"
    assert openai_compat.base64_decode("QUJDR") == b"ABC"  # a lone 6-bit tail is dropped
    for bad in ("QU=JD", "QUJD===", "QUJD-_", "QUJD ", "QUJD\t"):
        assert openai_compat.base64_decode(bad) is None, bad
