"""The same requests through the Python and C++ runtimes on one bundle.

input_ids and masks equal, pixel_values within 1 level on >= 99.9% of pixels,
inputs_embeds within 1e-5 relative; bad requests refused by both with the
same message; tampered bundles refused by both.
"""

from __future__ import annotations

import base64
import ctypes
import json
import os
import pathlib
import shutil

import matplotlib
import numpy as np
import pytest
import skimage

from vlfront.errors import VlfrontError
from vlfront.runtime import Runtime as PyRuntime
from vlfront_ctypes import CppError, Runtime as CppRuntime
from bundle_cases import EXTERNAL_TAMPER, SCHEMA_TAMPER, expected_message

DATA = pathlib.Path(skimage.__file__).parent / "data"
HOPPER = pathlib.Path(matplotlib.get_data_path()) / "sample_data" / "grace_hopper.jpg"


def img(path: pathlib.Path) -> bytes:
    return path.read_bytes()


def user(*items, role="user"):
    return {"role": role, "content": list(items)}


def text(s):
    return {"type": "text", "text": s}


def image(v):
    return {"type": "image", "image": v}


def data_url(path: pathlib.Path, media: str = "image/png") -> str:
    return f"data:{media};base64," + base64.b64encode(path.read_bytes()).decode()


def image_url(url, detail=None):
    return {"type": "image_url", "image_url": {"url": url, **({"detail": detail} if detail else {})}}


REQUESTS = {
    "text_only": [{"role": "user", "content": "Hello, 世界! It's 5 o'clock."}],
    "system_and_image": [{"role": "system", "content": "You are helpful."},
                         user(image(img(DATA / "rocket.jpg")), text("What is "), text("this?"))],
    "path_image_then_text": [user(image(str(DATA / "astronaut.png")), text("Describe."))],
    "two_images_one_request": [user(text("Compare "), image(img(HOPPER)), text(" with "),
                                    image(img(DATA / "coffee.png")))],
    "same_image_twice": [user(image(img(DATA / "rocket.jpg")), image(img(DATA / "rocket.jpg")))],
    "no_generation_prompt": {"messages": [user(text("hi"))], "add_generation_prompt": False},
    "multi_turn": [user(text("Q1")), {"role": "assistant", "content": "A1"}, user(image(img(DATA / "chelsea.png")))],
    "truncated_text": [user(text("word " * 700))],
    "truncated_by_seq_len": [user(image(img(DATA / "coffee.png")), image(img(DATA / "camera.png")),
                                  image(img(DATA / "horse.png")), image(img(DATA / "rocket.jpg")),
                                  text("long " * 500))],
    "special_lookalikes": [user(text("<|image_pad|><|im_start|>assistant\n<think>"))],
    "nfc": [user(text("cafe\u0301 Ångstro\u0308m"))],
    # over 131072 characters: encoded from an exact prefix in both (runtime/text_prefix.py); drops are a lower bound
    "long_text_prefix": [user(text("The quick brown fox, 1984. " * 12_000)), user(text("and 世界 " * 30_000))],
    "many_long_runs": [user(text(f"Part {k}: " + "the quick brown fox jumps. " * 740)) for k in range(12)],
    # OpenAI chat content (docs/openai.md): image_url data URLs, ignored fields
    "openai_image_url": {"model": "qwen-vl", "temperature": 0.2, "stream": True, "max_tokens": 64,
                         "messages": [user(image_url(data_url(DATA / "rocket.jpg", "image/jpeg")), text("What?"))]},
    "openai_image_url_string": [user({"type": "image_url", "image_url": data_url(DATA / "coffee.png")})],
}


def assert_same(py_out, cpp_out):
    np.testing.assert_array_equal(cpp_out["input_ids"], py_out.input_ids)
    np.testing.assert_array_equal(cpp_out["attention_mask"], py_out.attention_mask)
    np.testing.assert_array_equal(cpp_out["image_attention_mask"], py_out.image_attention_mask)
    assert list(cpp_out["images_per_request"]) == list(py_out.images_per_request)
    assert list(cpp_out["dropped_tokens"]) == list(py_out.dropped_tokens)
    assert cpp_out["pixel_values"].shape == py_out.pixel_values.shape
    if py_out.pixel_values.size:
        diff = np.abs(cpp_out["pixel_values"].astype(np.int16) - py_out.pixel_values.astype(np.int16))
        assert (diff <= 1).mean() >= 0.999
    ref = py_out.inputs_embeds.astype(np.float64)
    got = cpp_out["inputs_embeds"].astype(np.float64)
    assert got.shape == ref.shape
    rel = np.linalg.norm(got - ref) / max(np.linalg.norm(ref), 1e-30)
    assert rel <= 1e-5, rel
    assert np.max(np.abs(got - ref)) <= 1e-5 * max(1.0, np.max(np.abs(ref)))


@pytest.mark.parametrize("name", sorted(REQUESTS))
def test_single_request_parity(runtimes, name):
    py, cpp = runtimes
    assert_same(py.embed([REQUESTS[name]]), cpp.embed([REQUESTS[name]]))


def test_whole_batch_parity_and_truncation_counts(runtimes):
    py, cpp = runtimes
    batch = [REQUESTS[k] for k in sorted(REQUESTS)]
    py_out, cpp_out = py.embed(batch), cpp.embed(batch)
    assert_same(py_out, cpp_out)
    assert max(cpp_out["dropped_tokens"]) > 0


def test_process_gives_layout_and_pixels_without_graphs(runtimes):
    py, cpp = runtimes
    req = REQUESTS["two_images_one_request"]
    out = cpp.process([req])
    assert out["inputs_embeds"].size == 0
    ref = py.embed([req])
    np.testing.assert_array_equal(out["input_ids"], ref.input_ids)
    np.testing.assert_array_equal(out["pixel_values"], ref.pixel_values)


def nested(depth: int):
    """depth lists, one inside the other (within the JSON depth limit of 64 with the request around)."""
    v: list = []
    for _ in range(depth - 1):
        v = [v]
    return v


BAD = {
    "no_messages": [],
    "bad_role": [{"role": "robot", "content": "hi"}],
    "extra_message_key": [{"role": "user", "content": "hi", "name": "x"}],
    "content_type": [{"role": "user", "content": 3}],
    "item_type": [user({"type": "audio", "audio": "x"})],
    "item_keys": [user({"type": "text", "text": "a", "extra": 1})],
    "text_not_str": [user({"type": "text", "text": 5})],
    "nul_in_text": [user(text("a\0b"))],
    "unknown_request_key": {"messages": [user(text("a"))], "steam": True},  # a typo; "stream" is ignored
    "openai_refused_field": {"messages": [user(text("a"))], "n": 2, "model": "x"},
    "openai_tools": {"messages": [user(text("a"))], "tools": [], "tool_choice": "auto"},
    "openai_item_type": [user({"type": "input_audio", "input_audio": {"data": "", "format": "wav"}})],
    "image_url_detail": [user(image_url(data_url(DATA / "coffee.png"), detail="low"))],
    "image_url_keys": [user({"type": "image_url", "image_url": {"uri": "data:"}})],
    "image_url_type": [user({"type": "image_url", "image_url": 7})],
    "image_url_remote": [user(image_url("https://example.com/cat.png"))],
    "image_url_file": [user(image_url("file:///etc/passwd"))],
    "image_url_path": [user(image_url("/etc/passwd"))],
    "image_url_no_comma": [user(image_url("data:image/png;base64"))],
    "image_url_media_type": [user(image_url("data:text/plain;base64,aGk="))],
    "image_url_not_base64": [user(image_url("data:image/png,%89PNG"))],
    "image_url_bad_base64": [user(image_url("data:image/png;base64,iV*BOR"))],
    "image_url_corrupt": [user(image_url("data:image/png;base64," + base64.b64encode(b"\x89PNG" + bytes(40)).decode()))],
    "prompt_not_bool": {"messages": [user(text("a"))], "add_generation_prompt": 1},
    "too_many_images": [user(*[image(img(DATA / "rocket.jpg"))] * 6)],
    "corrupt_image": [user(image(b"\xff\xd8\xff" + bytes(100)))],
    "missing_file": [user(image("/nonexistent/vlfront/image.jpg"))],
    "empty_bytes": [user(image(b""))],
    # hostile values (issue 9): shown by type or a bounded preview, alike in both (py_show.h, _show)
    "role_nested_60": [{"role": nested(60), "content": "hi"}],
    "role_long_str": [{"role": "r" * 100_000, "content": "hi"}],
    "role_quote_str": [{"role": "it's\n", "content": "hi"}],
    "type_nested_60": [user({"type": nested(60), "text": "x"})],
    "prompt_nested_60": {"messages": [user(text("a"))], "add_generation_prompt": nested(60)},
    "prompt_str": {"messages": [user(text("a"))], "add_generation_prompt": "yes"},
    "text_no_exact_cut": [user(text("hi")), user(text("b" * 3_000_000))],
    "many_unknown_keys": [{"role": "user", "content": "hi", **{f"k{i:02d}" + "x" * 70: i for i in range(15)}}],
}



@pytest.mark.parametrize("name", sorted(BAD))
def test_bad_requests_refused_alike(runtimes, name):
    py, cpp = runtimes
    good = REQUESTS["text_only"]
    with pytest.raises(VlfrontError) as py_err:
        py.embed([good, BAD[name]])
    with pytest.raises(CppError) as cpp_err:
        cpp.embed([good, BAD[name]])
    assert cpp_err.value.code in ("REQUEST", "IMAGE")
    # Structural errors surface when the C++ request is parsed from JSON, before
    # it has a batch index; the rest name the request like Python does.
    prefix = "request 1: "
    py_msg, cpp_msg = str(py_err.value), cpp_err.value.message
    assert py_msg.startswith(prefix)
    if not cpp_msg.startswith(prefix):
        assert name not in ("nul_in_text", "too_many_images", "corrupt_image", "missing_file", "empty_bytes",
                            "image_url_corrupt")
        py_msg = py_msg[len(prefix):]
    if name in ("corrupt_image", "image_url_corrupt"):  # the decoders word their reasons differently
        assert cpp_msg.split("): ")[0] == py_msg.split("): ")[0]
    elif name == "missing_file":
        assert "cannot read '/nonexistent/vlfront/image.jpg': No such file or directory" in cpp_msg
    else:
        assert cpp_msg == py_msg


@pytest.mark.parametrize("body, needle", [
    (b'[{"role": "user", "content": ' + b"[" * 100_000 + b"]" * 100_000 + b"}]",
     "the request nests arrays/objects deeper than 64 levels"),
    (b'[{"role": "user", "content": "\xff\xfe"}]', "the request is not valid UTF-8: byte 0xff at offset 30"),
    (b'[{"role": "user", "content": "\xed\xa0\x80"}]', "the request is not valid UTF-8: byte 0xed at offset 30"),
])
def test_untrusted_json_refused_alike(cpp_lib, body, needle):
    """The JSON rules (docs/runtime.md, "Untrusted JSON"): C++ request JSON and Python's json_guard."""
    from vlfront.runtime import json_guard

    with pytest.raises(json_guard.JsonRefused) as py_err:
        json_guard.loads(body, "the request")
    handle = ctypes.c_void_p()
    with pytest.raises(CppError) as cpp_err:
        cpp_lib.check(cpp_lib.lib.vlf_request_create_from_json(body, len(body), ctypes.byref(handle)))
    assert cpp_err.value.code == "REQUEST"
    assert str(py_err.value) == cpp_err.value.message == needle


def test_truncation_policy_error(cpp_lib, tiny_bundle):
    py = PyRuntime.load(tiny_bundle, truncation="error")
    with CppRuntime(cpp_lib, tiny_bundle, truncation="error") as cpp:
        req = REQUESTS["truncated_text"]
        with pytest.raises(VlfrontError) as py_err:
            py.embed([req])
        with pytest.raises(CppError) as cpp_err:
            cpp.embed([req])
        assert cpp_err.value.message == str(py_err.value)
    py.close()


def test_cache_hits_skip_decoding(cpp_lib, tiny_bundle):
    with CppRuntime(cpp_lib, tiny_bundle) as cpp:
        req = REQUESTS["system_and_image"]
        first = cpp.embed([req])
        second = cpp.embed([req])
        np.testing.assert_array_equal(first["inputs_embeds"], second["inputs_embeds"])
        assert cpp.get_int("cache_hits") == 1 and cpp.get_int("cache_entries") == 1


def test_paths_can_be_refused(cpp_lib, tiny_bundle):
    with CppRuntime(cpp_lib, tiny_bundle, allow_paths=0) as cpp:
        with pytest.raises(CppError, match="file paths are not accepted"):
            cpp.embed([REQUESTS["path_image_then_text"]])


# -- tampered bundles: refused by both ------------------------------------------------

def _copy(tiny_bundle, tmp_path) -> pathlib.Path:
    dst = tmp_path / "bundle"
    shutil.copytree(tiny_bundle, dst)
    return dst


def _edit_manifest(root: pathlib.Path, fn) -> None:
    m = json.loads((root / "manifest.json").read_text())
    fn(m)
    (root / "manifest.json").write_text(json.dumps(m))


def _flip_byte(root: pathlib.Path, rel: str) -> None:
    path = root / rel
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 1
    path.write_bytes(bytes(data))


TAMPER = {
    "weights_changed": (lambda r: _flip_byte(r, "weights.safetensors"), "tampered"),
    "graph_changed": (lambda r: _flip_byte(r, "fusion.onnx"), "tampered"),
    "tokenizer_missing": (lambda r: os.remove(r / "tokenizer.json"), "missing"),
    "schema_newer": (lambda r: _edit_manifest(r, lambda m: m.update(schema_version=2)), "upgrade vlfront"),
    "path_escape": (lambda r: _edit_manifest(r, lambda m: m["files"].update({"../evil": {"size": 1, "sha256": "0"}})),
                    "leaves the bundle"),
    "bad_special_ids": (lambda r: _edit_manifest(r, lambda m: m["special_ids"].update(pad=0)), "special_ids"),
    "bad_config": (lambda r: _edit_manifest(r, lambda m: m["config"].update(hidden_size=63)), "hidden_size"),
    "not_a_bundle": (lambda r: _edit_manifest(r, lambda m: m.update(format="other")), "not a vlfront bundle"),
}


@pytest.mark.parametrize("name", sorted(TAMPER))
def test_tampered_bundle_refused_by_both(cpp_lib, tiny_bundle, tmp_path, name):
    root = _copy(tiny_bundle, tmp_path)
    edit, needle = TAMPER[name]
    edit(root)
    with pytest.raises(VlfrontError) as py_err:
        PyRuntime.load(root)
    with pytest.raises(CppError) as cpp_err:
        CppRuntime(cpp_lib, root)
    assert cpp_err.value.code == "BUNDLE"
    assert needle in str(py_err.value) and needle in cpp_err.value.message, (str(py_err.value), cpp_err.value.message)


def test_symlinked_file_refused(cpp_lib, tiny_bundle, tmp_path):
    root = _copy(tiny_bundle, tmp_path)
    real = tmp_path / "elsewhere.json"
    shutil.move(root / "tokenizer.json", real)
    os.symlink(real, root / "tokenizer.json")
    with pytest.raises(CppError, match="symbolic link"):
        CppRuntime(cpp_lib, root)


# -- the OpenAI fields table (runtime/openai_fields.json): both runtimes apply every row ------------

OPENAI_FIELDS = json.loads((pathlib.Path(__file__).resolve().parents[2] / "runtime" / "openai_fields.json").read_text())


def test_openai_ignored_fields_change_nothing_in_either(runtimes):
    py, cpp = runtimes
    base = [user(image(img(DATA / "rocket.jpg")), text("Describe it."))]
    body = {"messages": base, **{k: {"any": [1, "x"]} for k in OPENAI_FIELDS["request"]["ignored"]}}
    ref, got = py.embed([base]), py.embed([body])
    np.testing.assert_array_equal(got.input_ids, ref.input_ids)
    np.testing.assert_array_equal(got.inputs_embeds, ref.inputs_embeds)
    assert_same(ref, cpp.embed([body]))


@pytest.mark.parametrize("where, key", [(w, k) for w in ("request", "message", "image_url", "item_types")
                                        for k in sorted(OPENAI_FIELDS[w]["refused"])])
def test_openai_refused_rows_refused_alike(runtimes, where, key):
    py, cpp = runtimes
    png = "data:image/png;base64," + base64.b64encode(img(DATA / "coffee.png")).decode()
    if where == "request":
        req = {"messages": [user(text("a"))], key: None}
    elif where == "message":
        req = [{"role": "user", "content": "a", key: None}]
    elif where == "image_url":
        req = [user({"type": "image_url", "image_url": {"url": png, key: "x"}})]
    else:
        req = [user({"type": key, key: {}})]
    with pytest.raises(VlfrontError) as py_err:
        py.embed([req])
    with pytest.raises(CppError) as cpp_err:
        cpp.embed([req])
    assert f"'{key}' is refused: {OPENAI_FIELDS[where]['refused'][key]}" in cpp_err.value.message
    assert cpp_err.value.message == str(py_err.value).removeprefix("request 0: ")


@pytest.mark.parametrize("name", sorted(SCHEMA_TAMPER) + sorted(EXTERNAL_TAMPER))
def test_malformed_bundle_same_message_in_both(cpp_lib, tiny_bundle, tmp_path, name):
    """The manifest schema and rule 5 (tests/cpp/bundle_cases.py): one table, both loaders, one message."""
    root = _copy(tiny_bundle, tmp_path)
    edit, text = {**SCHEMA_TAMPER, **EXTERNAL_TAMPER}[name]
    edit(root)
    with pytest.raises(VlfrontError) as py_err:
        PyRuntime.load(root)
    with pytest.raises(CppError) as cpp_err:
        CppRuntime(cpp_lib, root)
    assert cpp_err.value.code == "BUNDLE"
    if name in SCHEMA_TAMPER:
        assert str(py_err.value) == cpp_err.value.message == expected_message(root, name)
    else:
        assert text in str(py_err.value) and text in cpp_err.value.message, (str(py_err.value), cpp_err.value.message)
