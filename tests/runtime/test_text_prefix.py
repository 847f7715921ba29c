"""Tokenize only what can be kept (runtime/text_prefix.py): exact against the full encoding, bounded.

The cut rules are checked where they can break: every cut of adversarial and random
texts must split the encoding exactly (encode(t) == encode(t[:c]) + encode(t[c:])), and
the prefix encoder must equal truncating the full encoding, on texts made to defeat it.
"""

from __future__ import annotations

import os
import time

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from vlfront.config import preset
from vlfront.errors import RequestError, TokenizerError
from vlfront.runtime.processor import Processor
from vlfront.runtime.text_prefix import FULL_CHARS, MAX_GAP, NoCutError, encode_prefix, first_cut

# Characters that sit on the edges of the Qwen regex's classes and of the cut rules.
TRICKY = ("a", "Z", "s", "'", "’", "1", "٣", "²", " ", "  ", "\t", "\n", "\r\n", "\r", "\u00a0", "\u3000",
          "\u180e", "\u200b", "\x1c", "\x85", "!", "...", "-", "中", "文", "，", "。", "é", "e\u0301",
          "ſ", "\u212a", "😀", "\U00020000", "\uffff", "\u0378", "ı", "İ", "ß", "_", "@", "`")


def cuts(text: str) -> list[int]:
    out, c = [], first_cut(text, 1, len(text))
    while c is not None:
        out.append(c)
        c = first_cut(text, c + 1, len(text))
    return out


def adversarial() -> dict[str, str]:
    word = "supercalifragilistic" * 40
    return {
        "long_words": " ".join([word] * 30),
        "whitespace_runs": ("x" + " " * 700 + "\n" * 5 + "\t \u3000 y") * 20,
        "digit_runs": "1234567890" * 900 + "abc" + "9" * 3000,
        "cjk": "中文的句子没有空格，但是有标点。" * 700 + "世界" * 500,
        "mixed": ("It's 5 o'clock — café\u0301 naïve 東京 2024年! \r\n\tdon't ’s 'LL " * 300),
        "punct_runs": ("!?" * 300 + " " + "=" * 500 + "\n") * 8,
        "newlines": ("line\n\n\r\n  \n" * 700),
        "contractions": ("'s't're've'm'll'd" * 400),
    }


@pytest.mark.parametrize("name", sorted(adversarial()))
def test_every_cut_splits_the_encoding_exactly(qwen_tokenizer, name):
    text = adversarial()[name]
    enc = qwen_tokenizer._encode
    full = enc(text)
    found = cuts(text)
    assert found, "the text should have exact cuts"
    for c in found[:: max(1, len(found) // 60)]:
        assert enc(text[:c]) + enc(text[c:]) == full, (name, c, text[c - 3 : c + 3])


@pytest.mark.parametrize("name", sorted(adversarial()))
@pytest.mark.parametrize("limit", [1, 37, 512])
def test_prefix_equals_truncated_full_encoding(qwen_tokenizer, name, limit):
    text = adversarial()[name]
    enc = qwen_tokenizer._encode
    full = enc(text)
    try:
        ids, complete = encode_prefix(enc, text, limit, full_chars=0, max_gap=4096)
    except NoCutError:
        pytest.fail(f"{name} has cuts at most 4096 characters apart")
    if complete:
        assert ids == full
    else:
        assert ids == full[:limit] and len(full) > limit


@settings(max_examples=int(os.environ.get("VLFRONT_FUZZ_EXAMPLES", "300")), deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.sampled_from(TRICKY), min_size=1, max_size=60))
def test_cuts_are_exact_on_random_texts(qwen_tokenizer, parts):
    import unicodedata

    text = unicodedata.normalize("NFC", "".join(parts))
    enc = qwen_tokenizer._encode
    full = enc(text)
    for c in cuts(text):
        assert enc(text[:c]) + enc(text[c:]) == full, (text, c)
    for limit in (1, 3, 10):
        try:
            ids, complete = encode_prefix(enc, text, limit, full_chars=0, max_gap=8)
        except NoCutError:
            continue
        assert ids == (full if complete else full[:limit])
        assert complete or len(full) > limit


def test_no_cut_in_a_long_single_word_is_refused_without_encoding_it(qwen_tokenizer):
    encoded = []
    text = "a" * (30 << 20)
    with pytest.raises(NoCutError, match=f"no place to cut it exactly .* over {MAX_GAP} characters"):
        encode_prefix(lambda t: encoded.append(len(t)) or [], text, 512)
    assert encoded == []  # refused without encoding any of it (the time target lives in make bench)
    with pytest.raises(TokenizerError, match="no place to cut it exactly"):
        qwen_tokenizer.encode_prefix(text, 512)


@pytest.mark.parametrize("unit", ["hello world, this is 12 text. ", "7", "中文字，", "line one\n"])
def test_thirty_mib_text_keeps_the_first_tokens(qwen_tokenizer, unit):
    text = unit * ((30 << 20) // len(unit.encode()))
    ids, complete = qwen_tokenizer.encode_prefix(text, 512)
    assert not complete and len(ids) == 512
    # the same as the full encoding of a prefix ten times longer than needed
    assert ids == qwen_tokenizer.encode(text[: 40 * 512 + 1000])[:512]


def test_short_text_is_encoded_in_full_and_counted_exactly(qwen_tokenizer):
    text = "word " * 20_000  # 100,000 characters <= FULL_CHARS
    assert len(text) <= FULL_CHARS
    ids, complete = qwen_tokenizer.encode_prefix(text, 512)
    assert complete and ids == qwen_tokenizer.encode(text) and len(ids) == 20_001  # "word", " word" x 19,999, " "


class _FullOnly:
    """The same tokenizer without encode_prefix: the processor then encodes every text in full."""

    def __init__(self, tok):
        self.encode = tok.encode


def test_processor_layout_equals_full_encoding(qwen_tokenizer):
    cfg = preset("tiny")
    fast, slow = Processor(qwen_tokenizer, cfg), Processor(_FullOnly(qwen_tokenizer), cfg)
    long_text = "The quick brown fox, 1984. " * 8000  # 216,000 characters > FULL_CHARS
    for request in ([{"role": "user", "content": long_text}],
                    [{"role": "user", "content": "short one"}, {"role": "assistant", "content": long_text},
                     {"role": "user", "content": long_text}],
                    [{"role": "user", "content": "x" * 300}, {"role": "user", "content": "word " * 100}]):
        a, b = fast.layout(request, 0), slow.layout(request, 0)
        assert (a.input_ids == b.input_ids).all() and a.num_tokens == b.num_tokens
        # a run not encoded in full counts as max_text_tokens + 1: a lower bound of the drop
        assert a.dropped_tokens <= b.dropped_tokens
        if all(len(m["content"]) <= FULL_CHARS for m in request):
            assert a.dropped_tokens == b.dropped_tokens


def test_policy_error_refuses_a_long_text_with_a_lower_bound(qwen_tokenizer):
    cfg = preset("tiny")
    p = Processor(qwen_tokenizer, cfg, truncation="error")
    with pytest.raises(RequestError, match=r"has at least 513 text tokens .* at least 1 tokens over"):
        p.layout([{"role": "user", "content": "word " * 50_000}], 0)
    with pytest.raises(RequestError, match=r"has 601 text tokens"):
        p.layout([{"role": "user", "content": "word " * 600}], 0)


def test_processor_names_the_message_of_an_uncuttable_text(qwen_tokenizer):
    p = Processor(qwen_tokenizer, preset("tiny"))
    with pytest.raises(RequestError, match=r"^request 3: message 1: text of 3000000 characters has no place"):
        p.layout([{"role": "user", "content": "hi"}, {"role": "user", "content": "b" * 3_000_000}], 3)


def test_text_spread_over_many_runs_costs_what_can_be_kept(tokenizer_json, qwen_tokenizer):
    """40 messages of 20,000 characters: the first FULL_CHARS in full, then only until max_text_tokens."""
    tok = type(qwen_tokenizer).from_file(tokenizer_json)
    encoded = []
    inner = tok._encode
    tok._encode = lambda t: encoded.append(len(t)) or inner(t)
    cfg = preset("tiny")
    request = [{"role": "user", "content": f"Part {k}: " + "the quick brown fox jumps. " * 740} for k in range(40)]
    lay = Processor(tok, cfg).layout(request, 0)
    ref = Processor(_FullOnly(qwen_tokenizer), cfg).layout(request, 0)
    assert (lay.input_ids == ref.input_ids).all()
    assert lay.dropped_tokens <= ref.dropped_tokens
    total = sum(len(m["content"]) for m in request)
    assert total > 5 * FULL_CHARS and sum(encoded) < FULL_CHARS + 40_000, (total, sum(encoded))


def test_exact_counts_up_to_full_chars_per_request(qwen_tokenizer):
    cfg = preset("tiny")
    request = [{"role": "user", "content": "word " * 2000}, {"role": "user", "content": "more " * 2000}]
    a = Processor(qwen_tokenizer, cfg).layout(request, 0)
    b = Processor(_FullOnly(qwen_tokenizer), cfg).layout(request, 0)
    assert (a.input_ids == b.input_ids).all() and a.dropped_tokens == b.dropped_tokens > 3000
