"""Hostile request values in the Python API: our error naming the field, for that request only.

Deeply nested or huge values must not reach repr() (RecursionError, the int-to-str limit),
and a bad request must not fail the good ones of its batch (embed_each, Batcher).
A property test feeds the processor random JSON-shaped requests: only RequestError may come out.
"""

from __future__ import annotations

import os
import json

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from vlfront.config import preset
from vlfront.errors import RequestError
from vlfront.runtime import Runtime
from vlfront.runtime.batcher import Batcher
from vlfront.runtime.processor import Processor, unexpected_request_error

DEPTH = 50_000


def nested(depth: int = DEPTH):
    v: list = []
    for _ in range(depth):
        v = [v]
    return v


GOOD = [{"role": "user", "content": "Hello there"}]

HOSTILE = {
    "role_nested": ([{"role": nested(), "content": "hi"}],
                    "message 0: role must be one of ['system', 'user', 'assistant'], got list"),
    "role_huge_int": ([{"role": 10**5000, "content": "hi"}],
                      "message 0: role must be one of ['system', 'user', 'assistant'], got int"),
    "role_long_str": ([{"role": "r" * 1_000_000, "content": "hi"}],
                      "message 0: role '" + "r" * 60 + "'... (1000000 characters) is not one of"),
    "type_nested": ([{"role": "user", "content": [{"type": nested(), "text": "x"}]}],
                    "message 0, item 0: type list is not 'text', 'image' or 'image_url'"),
    "prompt_nested": ({"messages": GOOD, "add_generation_prompt": nested()},
                      "add_generation_prompt must be true or false, got list"),
    "prompt_huge_int": ({"messages": GOOD, "add_generation_prompt": -10**5000},
                        "add_generation_prompt must be true or false, got int"),
    "text_nested": ([{"role": "user", "content": [{"type": "text", "text": nested()}]}],
                    "message 0, item 0: text must be a str, got list"),
    "image_nested": ([{"role": "user", "content": [{"type": "image", "image": nested()}]}],
                     "message 0, item 0: image value of type list"),
    "key_tuple": ([{"role": "user", "content": "x", (1, (2,)): 3}], "unknown ['<tuple>']"),
}


@pytest.fixture(scope="module")
def processor(qwen_tokenizer):
    return Processor(qwen_tokenizer, preset("tiny"))


@pytest.mark.parametrize("name", sorted(HOSTILE))
def test_hostile_value_is_our_error_naming_the_field(processor, name):
    request, needle = HOSTILE[name]
    with pytest.raises(RequestError) as err:
        processor.layout(request, 2)
    msg = str(err.value)
    assert msg.startswith("request 2: ") and needle in msg, msg
    assert len(msg) < 1000  # bounded, whatever the value's size


def test_unexpected_errors_are_wrapped_per_request():
    e = unexpected_request_error(RecursionError("maximum recursion depth exceeded"), 4)
    assert isinstance(e, RequestError) and str(e) == "request 4: a value of the request is nested too deeply to be read"
    assert str(unexpected_request_error(KeyError("x"), 0)) == "request 0: the request could not be laid out (KeyError)"


class _Exploding:
    """A request value whose type check itself blows up (a hostile object in the Python API)."""

    def __eq__(self, other):
        raise RuntimeError("boom")

    __hash__ = object.__hash__


@pytest.fixture(scope="module")
def runtime(tiny_bundle):
    rt = Runtime.load(tiny_bundle)
    yield rt
    rt.close()


def test_embed_each_fails_only_the_bad_requests(runtime):
    bad = [HOSTILE["role_nested"][0], HOSTILE["prompt_huge_int"][0], {"messages": GOOD, "x": _Exploding()}]
    batch = [GOOD, bad[0], GOOD, bad[1], bad[2]]
    results = runtime.embed_each(batch)
    ref = runtime.embed([GOOD]).inputs_embeds
    for i in (0, 2):
        np.testing.assert_array_equal(results[i].inputs_embeds, ref)
    for i in (1, 3, 4):
        assert isinstance(results[i], RequestError) and results[i].index == i, results[i]


def test_batcher_fails_only_the_bad_future(runtime):
    ref = runtime.embed([GOOD]).inputs_embeds
    with Batcher(runtime, max_batch=8, max_wait_s=0.05) as b:
        futures = [b.submit(r) for r in (GOOD, HOSTILE["role_nested"][0], GOOD, HOSTILE["type_nested"][0])]
        np.testing.assert_array_equal(futures[0].result(timeout=60).inputs_embeds, ref)
        np.testing.assert_array_equal(futures[2].result(timeout=60).inputs_embeds, ref)
        for f in (futures[1], futures[3]):
            with pytest.raises(RequestError, match="must be one of|is not 'text'"):
                f.result(timeout=60)


def test_batcher_runs_a_heavy_text_alone_and_every_answer_is_exact(runtime):
    from vlfront.runtime.batcher import HEAVY_TEXT_CHARS, is_heavy

    heavy = {"messages": [{"role": "user", "content": [
        {"type": "text", "text": "many words, 12 of them. " * (HEAVY_TEXT_CHARS // 24 + 1)}]}]}
    small = [{"messages": [{"role": "user", "content": f"small request {i}"}]} for i in range(3)]
    assert is_heavy(heavy) and not any(map(is_heavy, small))
    assert not is_heavy({"messages": 5}) and not is_heavy([{"content": [None, {"text": 3}]}])  # malformed: not heavy
    want = [runtime.embed([r]).inputs_embeds for r in [heavy, *small]]
    # a 0.5 s window and room for 8: without the heavy lane all four would share one batch
    with Batcher(runtime, max_batch=8, max_wait_s=0.5) as b:
        futures = [b.submit(r) for r in [heavy, *small]]
        for f, w in zip(futures, want):
            np.testing.assert_array_equal(f.result(timeout=60).inputs_embeds, w)
    assert (b.requests, b.batches) == (4, 2)  # the heavy one alone, the three small ones together


# -- property: any JSON-shaped request -> a Layout or RequestError, nothing else --------------

_scalars = st.one_of(st.none(), st.booleans(), st.integers(), st.floats(allow_nan=True),
                     st.text(max_size=20), st.sampled_from(["user", "system", "assistant", "text", "image",
                                                            "image_url", "messages", "role", "content"]))
_json = st.recursive(_scalars, lambda inner: st.one_of(
    st.lists(inner, max_size=4),
    st.dictionaries(st.sampled_from(["role", "content", "type", "text", "image", "image_url", "url",
                                     "messages", "add_generation_prompt", "name", "x"]), inner, max_size=4)),
    max_leaves=25)
_item = st.one_of(st.fixed_dictionaries({"type": st.just("text"), "text": _json}),
                  st.fixed_dictionaries({"type": _json, "text": st.text(max_size=10)}),
                  st.fixed_dictionaries({"type": st.just("image_url"), "image_url": _json}), _json)
_message = st.one_of(st.fixed_dictionaries({"role": st.one_of(st.sampled_from(["user", "system"]), _json),
                                            "content": st.one_of(st.text(max_size=30), st.lists(_item, max_size=3),
                                                                 _json)}), _json)
_request = st.one_of(st.lists(_message, max_size=3),
                     st.fixed_dictionaries({"messages": st.lists(_message, max_size=3)},
                                           optional={"add_generation_prompt": _json, "stream": _json}), _json)


@settings(max_examples=int(os.environ.get("VLFRONT_FUZZ_EXAMPLES", "400")), deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow])
@given(_request)
def test_processor_raises_only_request_errors(processor, request):
    try:
        json.dumps(request)  # JSON-shaped, as a server hands it over
    except (ValueError, TypeError):
        pass
    try:
        processor.layout(request, 0)
    except RequestError as e:
        assert str(e).startswith("request 0: ") and len(str(e)) < 2000
