"""The runtime's host-side tokenizer (SPEC 1.2): values, ordinary text, NFC, decode, fallback, errors."""

from __future__ import annotations

import json
import subprocess
import sys
import unicodedata

import pytest
import tokenizers

from vlfront.config import NUM_ORDINARY_TOKENS, QWEN_PATTERN, SPECIAL_TOKENS
from vlfront.errors import TokenizerError
from vlfront.runtime.tokenizer import BYTE_TO_UNICODE, Tokenizer

# --- the Qwen tokenizer --------------------------------------------------------


def test_values(qwen_tokenizer):
    assert qwen_tokenizer.backend == "tiktoken" and qwen_tokenizer.fallback_reason == ""
    assert qwen_tokenizer.encode("Hello world") == [9707, 1879]
    assert qwen_tokenizer.encode("你好，世界！这是一个测试。") == [108386, 3837, 99489, 6313, 105464, 81705, 1773]
    assert qwen_tokenizer.encode("user\n") == [872, 198]
    assert qwen_tokenizer.encode("") == []
    assert qwen_tokenizer.special_tokens == {s: i for i, s in SPECIAL_TOKENS.items()}
    assert qwen_tokenizer.vocab_size == 151_669


def test_special_token_lookalikes_stay_ordinary(qwen_tokenizer):
    assert qwen_tokenizer.encode("<|image_pad|>") == [27, 91, 1805, 30290, 91, 29]
    assert qwen_tokenizer.encode("<|im_start|>") == [27, 91, 318, 4906, 91, 29]
    for text in SPECIAL_TOKENS.values():
        ids = qwen_tokenizer.encode(text)
        assert max(ids) < NUM_ORDINARY_TOKENS and qwen_tokenizer.decode(ids) == text


def test_nfc(qwen_tokenizer):
    assert qwen_tokenizer.encode("e\u0301") == qwen_tokenizer.encode("\u00e9") == [963]
    # A + combining ring, the Angstrom sign and the precomposed letter are one token.
    assert qwen_tokenizer.encode("A\u030a") == qwen_tokenizer.encode("\u212b") == qwen_tokenizer.encode("\u00c5") == [144044]


@pytest.mark.parametrize("text", ["Hello world", "商品详情：\n尺码 S/M/L\r\n", "👩🏽‍💻 e\u0301t\u00e9", "  \t<|im_end|>\n\n", "x"])
def test_decode_round_trip(qwen_tokenizer, text):
    ids = qwen_tokenizer.encode(text)
    assert qwen_tokenizer.decode(ids) == unicodedata.normalize("NFC", text)
    assert qwen_tokenizer.decode_bytes(ids) == unicodedata.normalize("NFC", text).encode("utf-8")


def test_decode_specials_and_partial_characters(qwen_tokenizer):
    assert qwen_tokenizer.decode([151644, 872, 198, 151655, 151645]) == "<|im_start|>user\n<|image_pad|><|im_end|>"
    assert qwen_tokenizer.encode("中") == [15946]
    assert qwen_tokenizer.decode_bytes([160]) == b"\xe4"  # first byte of a CJK character
    assert qwen_tokenizer.decode([160, 9707]) == "\ufffdHello"


def test_encode_batch_matches_encode(qwen_tokenizer):
    texts = ["a", "", "你好", "<|image_pad|>", "e\u0301"]
    assert qwen_tokenizer.encode_batch(texts) == [qwen_tokenizer.encode(t) for t in texts]


@pytest.mark.parametrize("call, message", [
    (lambda t: t.encode("ok\ud800ok"), r"lone surrogate '\\ud800' at index 2"),
    (lambda t: t.encode(b"bytes"), "expected str, got bytes"),
    (lambda t: t.encode_batch(["fine", "\udc80"]), "text 1: lone surrogate"),
    (lambda t: t.decode([9707, -1]), "id -1 at position 1"),
    (lambda t: t.decode([151669]), r"id 151669 at position 0 is not in the vocabulary \(0..151668\)"),
    (lambda t: t.decode(["a"]), "id 'a' at position 0"),
])
def test_bad_input_is_refused(qwen_tokenizer, call, message):
    with pytest.raises(TokenizerError, match=message):
        call(qwen_tokenizer)


def test_imports_neither_torch_nor_onnx():
    code = "import sys, vlfront.runtime.tokenizer; print(sorted({'torch', 'onnx'} & set(sys.modules)))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


# --- handmade tokenizers: fast path, fallback, validation -----------------------

# Bytes keep their value as id; then he=256, ll=257, hell=258, Ġw=259, hello=260, el=261.
TINY_MERGES = [("h", "e"), ("l", "l"), ("he", "ll"), ("Ġ", "w"), ("hell", "o"), ("e", "l")]


def tiny_doc(merges=TINY_MERGES) -> dict:
    vocab = {BYTE_TO_UNICODE[b]: b for b in range(256)}
    for a, b in TINY_MERGES:
        vocab[a + b] = len(vocab)
    return {
        "version": "1.0",
        "added_tokens": [{"id": i, "content": s, "special": True, "normalized": False, "lstrip": False,
                          "rstrip": False, "single_word": False} for i, s in SPECIAL_TOKENS.items()],
        "normalizer": {"type": "NFC"},
        "pre_tokenizer": {"type": "Sequence", "pretokenizers": [
            {"type": "Split", "pattern": {"Regex": QWEN_PATTERN}, "behavior": "Isolated", "invert": False},
            {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": False, "use_regex": False}]},
        "decoder": {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": False, "use_regex": False},
        "model": {"type": "BPE", "ignore_merges": True, "byte_fallback": False, "vocab": vocab,
                  "merges": [[a, b] for a, b in merges]},
    }


def write(tmp_path, doc, name="tokenizer.json"):
    path = tmp_path / name
    path.write_text(json.dumps(doc), encoding="utf-8")
    return path


def hf_ids(path, texts):
    hf = tokenizers.Tokenizer.from_file(str(path))
    hf.encode_special_tokens = True
    return [e.ids for e in hf.encode_batch([unicodedata.normalize("NFC", t) for t in texts], add_special_tokens=False)]


TEXTS = ["hello world", "hells", "shell hell", "<|image_pad|>", "e\u0301l", ""]


def test_rank_consistent_file_uses_tiktoken(tmp_path):
    path = write(tmp_path, tiny_doc())
    tok = Tokenizer.from_file(path)
    assert tok.backend == "tiktoken"
    assert tok.encode("hello world") == [260, 259, 111, 114, 108, 100]
    assert tok.encode("hells") == [258, 115]
    assert tok.encode_batch(TEXTS) == hf_ids(path, TEXTS)


def test_other_merge_order_falls_back_to_hf_tokenizers(tmp_path):
    # `e l` first: HF merges "hells" as h|el|l|s, where tiktoken's id order gives hell|s.
    merges = [TINY_MERGES[-1]] + TINY_MERGES[:-1]
    path = write(tmp_path, tiny_doc(merges))
    tok = Tokenizer.from_file(path)
    assert tok.backend == "tokenizers" and "out of id order" in tok.fallback_reason
    assert tok.encode("hells") == [104, 261, 108, 115]
    assert tok.encode_batch(TEXTS) == hf_ids(path, TEXTS) == [tok.encode(t) for t in TEXTS]
    assert max(tok.encode("<|image_pad|>")) < 256  # still ordinary on the fallback path
    assert tok.decode([151655, 104, 261]) == "<|image_pad|>hel"


def _without_byte(doc):
    del doc["model"]["vocab"][BYTE_TO_UNICODE[0]]


@pytest.mark.parametrize("edit, message", [
    (lambda d: d["added_tokens"][12].update(id=5), "<|image_pad|> has id 5; SPEC 1.2 requires 151655"),
    (lambda d: d["added_tokens"].pop(), r"lack SPEC special tokens </think> \(151668\)"),
    (lambda d: d["model"]["vocab"].update({"\u2581hi": 300}), "'▁hi' is not byte-level"),
    (_without_byte, r"lacks single bytes \[0\]"),
    (lambda d: d["model"].update(dropout=0.1), "dropout=0.1 makes encoding random"),
    (lambda d: d["model"].update(type="WordPiece"), "model type 'WordPiece'"),
    (lambda d: d["model"]["merges"].append(["x", "zz"]), "merge 'x' 'zz' uses a token that is not in the vocab"),
    (lambda d: d["model"]["merges"].append("x y z"), "malformed merge 'x y z'"),
    (lambda d: d["model"]["vocab"].update({"zz": "7"}), "has id '7'"),
    (lambda d: d["model"]["vocab"].update({"zz": 256}), "one id to several tokens"),
    (lambda d: d.pop("model"), "no `model` object"),
    (lambda d: d.update(pre_tokenizer={"type": "Bogus"}), "Hugging Face tokenizers cannot load it"),
])
def test_invalid_file_is_refused(tmp_path, edit, message):
    doc = tiny_doc()
    edit(doc)
    with pytest.raises(TokenizerError, match=message):
        Tokenizer.from_file(write(tmp_path, doc))


def test_truncated_or_missing_file_is_refused(tmp_path):
    path = write(tmp_path, tiny_doc())
    path.write_bytes(path.read_bytes()[:-40])
    with pytest.raises(TokenizerError, match="not valid JSON"):
        Tokenizer.from_file(path)
    with pytest.raises(TokenizerError, match="cannot read tokenizer file"):
        Tokenizer.from_file(tmp_path / "absent.json")


def test_megabyte_whitespace_run_does_not_panic(qwen_tokenizer, tokenizer_json):
    """tiktoken's regex overflows its stack on ~1 MB of spaces; the runtime falls back to `tokenizers`."""
    import tokenizers

    hf = tokenizers.Tokenizer.from_file(str(tokenizer_json))
    text = "a" + " " * 1_000_000 + "b"
    ids = qwen_tokenizer.encode(text)
    assert ids == hf.encode(text, add_special_tokens=False).ids
    assert qwen_tokenizer.decode(ids) == text
