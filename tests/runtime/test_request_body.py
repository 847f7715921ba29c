"""Large bodies parsed out of process (runtime/request_body.py) and the cut texts they send back.

A cut text (text_prefix.CutText) must give the tokens, counts and errors of the whole text, or
refuse loudly (CutTooShortError); the parser processes must answer what parse_body answers here.
"""

from __future__ import annotations

import copy
import json
import time
import unicodedata

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from vlfront.config import preset
from vlfront.errors import RequestError
from vlfront.runtime import Runtime
from vlfront.runtime.processor import Processor
from vlfront.runtime.request_body import BodyRefused, ParserError, ParserPool, cut_texts, keep_for, parse_body
from vlfront.runtime.text_prefix import FULL_CHARS, CutText, CutTooShortError, prefix_chars

# Long texts made of runs that sit on the cut rules' edges; each is over FULL_CHARS characters.
LONG = {
    "words": "The quick brown fox, 1984. Don't stop! " * 9000,
    "cjk": "中文的句子没有空格，但是有标点。" * 14000,
    "decomposed": "cafe\u0301 nai\u0308ve " * 30000,  # NFC changes the length: the cut is of the NFC text
    "digits_then_words": "7" * 150_000 + " then words" * 20000,
    "newlines": "line\n\n\r\n  \n" * 20000,
    "one_word_tail": "some words " * 15000 + "x" * 200_000,  # no cut where the kept tokens end
}


def outcome(fn):
    try:
        return fn()
    except Exception as e:  # noqa: BLE001 — the outcome compared is the error's type and words
        return type(e).__name__, str(e)


@pytest.mark.parametrize("name", sorted(LONG))
@pytest.mark.parametrize("limit", [1, 37, 512])
def test_a_cut_text_encodes_like_the_whole_text(qwen_tokenizer, name, limit):
    text = LONG[name]
    full = unicodedata.normalize("NFC", text)
    keep = keep_for(qwen_tokenizer, limit)
    assert len(full) > keep, "the text must be longer than what is kept"
    cut = CutText(full[:keep], len(full))
    whole = outcome(lambda: qwen_tokenizer.encode_prefix(text, limit, full_chars=0))
    assert outcome(lambda: qwen_tokenizer.encode_prefix(cut, limit, full_chars=0)) == whole


PIECES = ["a", "Z", "'s", "’", "1", "٣", " ", "  ", "\t", "\n", "\r\n", "\u00a0", "\u3000", "\u200b", "!", "...",
          "中", "，", "é", "e\u0301", "\u212a", "😀", "İ", "ß", "_", "word", "12345"]


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(unit=st.lists(st.sampled_from(PIECES), min_size=1, max_size=40).map("".join),
       tail=st.lists(st.sampled_from(PIECES), max_size=20).map("".join), limit=st.integers(1, 600))
def test_property_a_cut_text_encodes_like_the_whole_text(qwen_tokenizer, unit, tail, limit):
    keep = keep_for(qwen_tokenizer, limit)
    text = unit * (keep // len(unit) + 2) + tail  # over `keep` characters, so the cut is real
    full = unicodedata.normalize("NFC", text)
    if len(full) <= keep or not unicodedata.is_normalized("NFC", full[:keep]):
        return
    whole = outcome(lambda: qwen_tokenizer.encode_prefix(text, limit, full_chars=0))
    assert outcome(lambda: qwen_tokenizer.encode_prefix(CutText(full[:keep], len(full)), limit,
                                                        full_chars=0)) == whole


def test_a_cut_too_short_refuses_instead_of_answering(qwen_tokenizer):
    text = LONG["words"]
    for keep in (10, 3000, 60_000):  # the first search reads up to character 2052 + MAX_GAP = 67,588
        with pytest.raises(CutTooShortError):
            qwen_tokenizer.encode_prefix(CutText(text[:keep], len(text)), 512, full_chars=0)
    # shorter than prefix_chars but long enough for what this text needs: answered, and exactly
    assert (qwen_tokenizer.encode_prefix(CutText(text[:67_590], len(text)), 512, full_chars=0)
            == qwen_tokenizer.encode_prefix(text, 512, full_chars=0))
    with pytest.raises(CutTooShortError):  # a length the processor would encode in full
        qwen_tokenizer.encode_prefix(CutText(text[:1000], 5000), 512)
    with pytest.raises(ValueError):
        CutText("abc", 3)  # not longer than its prefix: not a cut


def test_max_token_bytes_bounds_the_vocabulary(qwen_tokenizer):
    assert qwen_tokenizer.max_token_bytes == max(len(t) for t in qwen_tokenizer._file.ranks)
    assert 1 <= qwen_tokenizer.max_token_bytes <= 256
    assert keep_for(qwen_tokenizer, 512) == max(prefix_chars(512, qwen_tokenizer.max_token_bytes), FULL_CHARS + 1)
    assert keep_for(type("NoExactCuts", (), {"prefix_exact": False})(), 512) is None  # never cut for it


def requests_with_long_texts() -> list[dict]:
    w, c = LONG["words"], LONG["cjk"]
    return [
        {"messages": [{"role": "user", "content": w}]},
        {"messages": [{"role": "system", "content": "short"}, {"role": "user", "content": [
            {"type": "text", "text": "first "}, {"type": "text", "text": c}, {"type": "text", "text": w}]}],
         "add_generation_prompt": False},
        {"messages": [{"role": "user", "content": LONG["decomposed"]}, {"role": "assistant", "content": w}]},
        {"messages": [{"role": "user", "content": w + "\0"}]},  # NUL past the cut: not cut, refused whole
        {"messages": [{"role": "user", "content": w + "\ud800"}]},  # a lone surrogate past the cut
        {"messages": [{"role": "user", "content": LONG["one_word_tail"]}]},
        {"messages": [{"role": "robot", "content": w}]},  # an error elsewhere is still that error
    ]


@pytest.mark.parametrize("truncation", ["truncate", "error"])
def test_processor_answers_a_cut_request_like_the_whole_one(qwen_tokenizer, truncation):
    cfg = preset("tiny")
    proc = Processor(qwen_tokenizer, cfg, truncation=truncation)
    keep = keep_for(qwen_tokenizer, cfg.max_text_tokens)
    cuts = 0
    for request in requests_with_long_texts():
        cut = copy.deepcopy(request)
        cuts += cut_texts(cut, keep)

        def lay(r):
            out = proc.layout(r, 0)
            return out.input_ids.tolist(), out.num_tokens, out.dropped_tokens

        assert outcome(lambda: lay(cut)) == outcome(lambda: lay(request))
    assert cuts == 7  # words; cjk + words; decomposed + words; one_word_tail; the robot's text


def test_cut_texts_leaves_short_and_unclean_texts_whole():
    keep = FULL_CHARS + 1
    short, nul, lone = "x" * keep, "y " * keep + "\0", "z " * keep + "\udfff"
    request = {"messages": [{"role": "user", "content": short}, {"role": "user", "content": nul},
                            {"role": "user", "content": [{"type": "text", "text": lone}, {"type": "image"}]},
                            "not a message"]}
    assert cut_texts(request, keep) == 0
    assert request["messages"][0]["content"] is short and request["messages"][1]["content"] is nul


def test_runtime_embeds_a_cut_request_bitwise_like_the_whole_one(tiny_bundle, qwen_tokenizer):
    with Runtime.load(tiny_bundle) as rt:
        keep = keep_for(rt.tokenizer, rt.config.max_text_tokens)
        request = requests_with_long_texts()[1]
        cut = copy.deepcopy(request)
        assert cut_texts(cut, keep) == 2
        a, b = rt.embed([request]), rt.embed([cut])
        for name in ("inputs_embeds", "input_ids", "attention_mask", "image_attention_mask"):
            assert np.array_equal(getattr(a, name), getattr(b, name)), name
        assert list(a.dropped_tokens) == list(b.dropped_tokens)


BODIES = [
    json.dumps({"messages": [{"role": "user", "content": LONG["words"]}]}).encode(),
    json.dumps({"messages": [{"role": "user", "content": [{"type": "image", "image_base64": "aGVsbG8="},
                                                           {"type": "text", "text": "hi"}]}]}).encode(),
    b'{"messages":[{"role":"user","content":"\xff\xfe"}]}',
    b"[" * 100_000 + b"]" * 100_000,
    b'{"messages": 3}',
    b'{"messages": [',
    json.dumps({"messages": [{"role": "user", "content": [{"type": "image", "image_base64": "not base64!"}]}]}
               ).encode(),
    json.dumps({"messages": [{"role": "user", "content": [{"type": "image", "path": "/etc/passwd"}]}]}).encode(),
]


def test_parser_processes_answer_what_parse_body_answers(qwen_tokenizer):
    keep = keep_for(qwen_tokenizer, 512)
    pool = ParserPool(workers=2, keep=keep)
    try:
        futures = [pool.submit([b[i:i + 4096] for i in range(0, len(b), 4096)]) for b in BODIES]
        for body, future in zip(BODIES, futures):
            def here():
                request = parse_body(body)
                cut_texts(request, keep)
                return request

            expected, got = outcome(here), outcome(lambda: future.result(30))
            assert got == expected, body[:60]
            if isinstance(got, dict) and isinstance(got["messages"][0]["content"], str):
                assert isinstance(got["messages"][0]["content"], CutText)  # came back cut, with its length
                assert got["messages"][0]["content"].full_length == len(LONG["words"])
        errors = [f.exception() for f in futures]
        assert [type(e) for e in errors] == [type(None), type(None), BodyRefused, BodyRefused, BodyRefused,
                                             BodyRefused, RequestError, RequestError]
        assert pool.parsed == len(BODIES) and pool.restarts == 0
    finally:
        pool.close()


def test_a_dead_parser_process_fails_its_body_alone_and_is_replaced():
    pool = ParserPool(workers=1)
    try:
        victim = pool.pids()[0]
        proc = pool._procs[0]
        proc.kill()
        proc.wait()
        with pytest.raises(ParserError, match="body parser process"):
            pool.submit([b'{"messages": []}']).result(30)
        assert pool.restarts == 1 and pool.pids() != [victim]
        assert pool.submit([b'{"messages": [{"role": "user", "content": "ok"}]}']).result(30) == {
            "messages": [{"role": "user", "content": "ok"}]}
    finally:
        pool.close()
    deadline = time.monotonic() + 10
    while any(p.poll() is None for p in pool._procs) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert all(p.poll() is not None for p in pool._procs), "close() leaves no parser process behind"


# -- fuzz: any bytes give a request or our refusal, and a parser process answers the same ------------

_VALID = json.dumps({"messages": [{"role": "user", "content": [
    {"type": "image", "image_base64": "aGVsbG8gd29ybGQ="}, {"type": "text", "text": "héllo 中文 \\u0000"}]},
    {"role": "assistant", "content": "plain"}], "add_generation_prompt": True}).encode()

_bodies = st.one_of(
    st.binary(max_size=600),
    st.builds(lambda flips, cut: _mutate(_VALID, flips, cut),
              st.lists(st.tuples(st.integers(0, len(_VALID) - 1), st.integers(0, 255)), max_size=6),
              st.integers(0, len(_VALID))),
    st.recursive(st.none() | st.booleans() | st.integers() | st.text(max_size=20),
                 lambda kids: st.lists(kids, max_size=4) | st.dictionaries(st.text(max_size=8), kids, max_size=4),
                 max_leaves=30).map(lambda v: json.dumps({"messages": v}).encode()),
)


def _mutate(data: bytes, flips, cut: int) -> bytes:
    out = bytearray(data[:cut] if cut else data)
    for pos, value in flips:
        if pos < len(out):
            out[pos] = value
    return bytes(out)


def _parsed_here(body: bytes, keep=None):
    try:
        request = parse_body(body)
    except (BodyRefused, RequestError) as e:
        return type(e).__name__, str(e)
    if keep:
        cut_texts(request, keep)
    return request


@settings(max_examples=300, deadline=None)
@given(_bodies)
def test_property_any_body_is_a_request_or_our_refusal(body):
    out = _parsed_here(body)  # anything else (a bare built-in) fails the test
    assert isinstance(out, dict) and isinstance(out["messages"], list) or out[0] in ("BodyRefused", "RequestError")


@pytest.fixture(scope="module")
def pool():
    p = ParserPool(workers=1, keep=FULL_CHARS + 1)
    yield p
    p.close()


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(_bodies)
def test_property_a_parser_process_answers_what_parse_body_answers(pool, body):
    assert outcome(lambda: pool.submit([body]).result(30)) == outcome(lambda: _parsed_here(body, pool.keep))
