"""Fuzzed OpenAI image_url values and request fields through both runtimes: same result, same message."""

from __future__ import annotations

import base64
import io
import json
import pathlib
import random

import numpy as np
import pytest
from PIL import Image

from vlfront.errors import VlfrontError
from vlfront_ctypes import CppError

FIELDS = json.loads((pathlib.Path(__file__).resolve().parents[2] / "runtime" / "openai_fields.json").read_text())


def small_png() -> bytes:
    buf = io.BytesIO()
    Image.fromarray(np.arange(16 * 12 * 3, dtype=np.uint8).reshape(16, 12, 3)).save(buf, "PNG")
    return buf.getvalue()


def fuzz_urls(n: int, seed: int = 0) -> list[str]:
    rng = random.Random(seed)
    good = base64.b64encode(small_png()).decode()
    schemes = ["data:", "DATA:", "Data:", "data", "http://h/", "https://h/", "file:///", "", "dat a:", "x-data:", "7data:"]
    media = ["image/png", "IMAGE/PNG", "image/jpeg", "image/", "text/plain", "", "image", "imagex/png", "image/pngé"]
    params = [";base64", ";BASE64", ";name=a.png;base64", ";base64;x=1", "", ";base64;", ";charset=utf-8"]
    # Not good[:-2]: a PNG short of its last CRC byte decodes in PIL but not in the C++ decoder (a decoder
    # difference outside the URL rules).
    payloads = [good, good.rstrip("="), good[: len(good) // 2], good[:-1], good + "=", good + "===",
                good[:10] + "=" + good[10:], good[:20] + "\n" + good[20:], good[:20] + " " + good[20:],
                good.replace("+", "-").replace("/", "_"), "", "A", "AB", "é" + good, good + "\r\n", "%89PNG"]
    out = []
    for _ in range(n):
        if rng.random() < 0.4:  # a valid head: the payload decides
            url = rng.choice(schemes[:3]) + rng.choice(media[:3]) + rng.choice(params[:3]) + "," + rng.choice(payloads)
        else:
            url = rng.choice(schemes) + rng.choice(media) + rng.choice(params)
            if rng.random() < 0.9:
                url += "," + rng.choice(payloads)
        out.append(url)
    return out


def outcome_py(py, req):
    try:
        return "ok", py.embed([req]).input_ids
    except VlfrontError as e:
        return "error", str(e).removeprefix("request 0: ")


def outcome_cpp(cpp, req):
    try:
        return "ok", cpp.embed([req])["input_ids"]
    except CppError as e:
        return "error", e.message.removeprefix("request 0: ")


def same(a, b):
    assert a[0] == b[0], (a, b)
    if a[0] == "ok":
        np.testing.assert_array_equal(a[1], b[1])
    elif "): " in a[1] and "image 0 (" in a[1]:  # a decoder's own words differ; where and why class agree
        assert a[1].split("): ")[0] == b[1].split("): ")[0]
    else:
        assert a[1] == b[1]


def test_fuzzed_image_urls_agree(runtimes):
    py, cpp = runtimes
    kinds = {"ok": 0, "error": 0}
    for k, url in enumerate(fuzz_urls(400)):
        value = url if k % 2 else {"url": url}
        req = [{"role": "user", "content": [{"type": "image_url", "image_url": value}, {"type": "text", "text": "?"}]}]
        a, b = outcome_py(py, req), outcome_cpp(cpp, req)
        same(a, b)
        kinds[a[0]] += 1
    assert kinds["ok"] > 20 and kinds["error"] > 100, kinds


def test_fuzzed_request_fields_agree(runtimes):
    py, cpp = runtimes
    rng = random.Random(1)
    names = (list(FIELDS["request"]["ignored"]) + list(FIELDS["request"]["refused"])
             + ["add_generation_prompt", "messages", "Model", "streaming", "n_", ""])
    for _ in range(200):
        body = {"messages": [{"role": "user", "content": "hi"}]}
        for name in rng.sample(names, rng.randint(1, 4)):
            body[name] = rng.choice([None, True, 0, 1.5, "x", [], {"a": 1}])
        if not isinstance(body.get("messages"), list):
            body["messages"] = [{"role": "user", "content": "hi"}]
        same(outcome_py(py, body), outcome_cpp(cpp, body))


def test_many_long_unknown_keys_are_shown_bounded_alike(runtimes):
    py, cpp = runtimes
    body = {"messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {
        **{f"k{i:03d}" + "x" * 5000: i for i in range(50)}}}]}]}
    a, b = outcome_py(py, body), outcome_cpp(cpp, body)
    same(a, b)
    assert a[0] == "error" and len(a[1]) < 1200 and a[1].endswith("and 40 more")
    body = {"messages": [{"role": "user", "content": "hi"}], **{"é" * 100 + str(i): 1 for i in range(30)}}
    a, b = outcome_py(py, body), outcome_cpp(cpp, body)
    same(a, b)
    assert a[1].startswith("unknown request keys ['" + "é" * 60 + "'") and "and 20 more" in a[1]
