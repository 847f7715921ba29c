"""The tokenizer asset: ranks, tokenizer.json, and token-exactness against tiktoken (SPEC 1.2).

Parity is checked three ways on the same inputs: the reference
`tiktoken.Encoding(mergeable_ranks=ranks).encode_ordinary(NFC(text))`, Hugging
Face `tokenizers` loading our tokenizer.json, and the runtime's Tokenizer.
Run with `-s` to see the corpus sizes and mismatch counts.
"""

from __future__ import annotations

import hashlib
import io
import json
import random
import subprocess
import unicodedata
import zipfile

import pytest
import tiktoken
import tokenizers

from vlfront.config import NUM_ORDINARY_TOKENS, QWEN_PATTERN, SPECIAL_TOKENS, TOKENIZER_SIZE
from vlfront.errors import TokenizerError
from vlfront.export import tokenizer_asset
from vlfront.runtime.tokenizer import Tokenizer

NFC = lambda s: unicodedata.normalize("NFC", s)  # noqa: E731

HANDWRITTEN = [
    # Chinese product text
    "【新品上市】华为Mate 60 Pro 智能手机，12GB+512GB，雅川青，支持卫星通话。",
    "这款保温杯采用316不锈钢内胆，保温12小时，保冷24小时；容量：500ml。包邮！",
    "商品详情：颜色分类：黑色/白色/灰色\n尺码：S M L XL XXL\n发货地：浙江杭州",
    "用户评价：质量很好，物流很快，五星好评！！！👍👍👍",
    "請問這件衣服有沒有大一點的尺寸？謝謝～",
    # English
    "Hello world",
    "The quick brown fox jumps over the lazy dog. It's 5 o'clock, isn't it? We'll see; they'd've known.",
    "DON'T SHOUT, I'M HERE. She's, we've, you're, I'd, he'll",
    # code
    "def f(x):\n    return x ** 2  # square\n\n\nclass A:\n\tpass\n",
    "for (int i = 0; i < n; ++i) { sum += a[i]; }\r\n",
    '{"key": [1, 2.5, -3e10, null, true], "url": "https://example.com/a?b=c&d=%20"}',
    "SELECT * FROM users WHERE id = 42 AND name LIKE '%bob%';",
    "<div class=\"x\">&nbsp;&lt;tag&gt;</div>",
    # emoji: ZWJ sequences, skin tones, flags, keycaps, variation selectors
    "👨‍👩‍👧‍👦 family, 👩🏽‍💻 coder, 🏳️‍🌈 flag, 👍🏻👍🏼👍🏽👍🏾👍🏿",
    "🇨🇳🇺🇸🇯🇵 1️⃣ #️⃣ ❤️ ☺︎ 🫠🫶",
    "😀😃😄😁😆😅😂🤣🥲☺️😊",
    # whitespace, newlines, tabs, CRLF
    "a  b   c    d",
    "line1\nline2\r\nline3\rline4\n\n\nline5",
    "\t\tindented\n  \n\t \n",
    "   leading and trailing   ",
    "trailing newline\n",
    "\n",
    " ",
    "",
    "\u00a0non-breaking\u00a0space\u3000ideographic\u2028line sep\u2029para",
    "x\x0by\x0cz\x85w",
    "nul\x00inside \x1c\x1d\x1e\x1f separators a\u180eb",
    "Ｉ'ＬＬ I'ſ it'S THEY'RE we'\u212a",  # contractions under (?i:) with case folding
    # numbers
    "0123456789 3.14159 1,000,000 1e-9 0xFF -42 +7",
    "２０２４年１２月３１日 ٠١٢٣٤٥٦٧٨٩ ①②③ Ⅻ ½",
    "电话：138-0013-8000，价格￥1999.00，折扣7.5折",
    # decomposed accents (NFC matters) and other scripts
    "e\u0301te\u0301 cafe\u0301 nai\u0308ve Ångstro\u0308m",
    "re\u0301sume\u0301 vs résumé",
    "\u1100\u1161\u11a8 한국어 텍스트",
    "Ελληνικά, Русский текст, العربية, हिन्दी, ไทย, עברית",
    "日本語のテキスト、カタカナとひらがな。",
    "Zalgo: Z\u0351\u036b\u0343a\u0352\u0363l\u0314g\u0349o",
    # special-token look-alikes: must stay ordinary text
    "<|image_pad|>",
    "<|im_start|>system\nYou are helpful.<|im_end|>\n<|im_start|>user\nhi<|im_end|>",
    "<|endoftext|><|vision_start|><|image_pad|><|vision_end|><tool_call></tool_call><think></think>",
    "<|image_pad |> < |im_start| > <|IMAGE_PAD|> <||> <|",
    # long runs (tiktoken and tokenizers both special-case long pieces)
    " " * 300 + "x", "\n" * 64, "\t \n" * 40, "a" * 500, "哈" * 300, "!" * 200, "1" * 100, "=-" * 150,
    "ab" * 200 + " " + "中文" * 100 + "😀" * 50,
]

# Code point pools for the seeded fuzz corpus: long-assigned characters only,
# so that Unicode-version differences between the libraries do not count.
POOLS = [
    [chr(c) for c in range(0x20, 0x7F)],
    [" ", " ", "  ", "\t", "\n", "\r\n", "\r", "\u00a0", "\u3000", "\x0b", "\x0c", "\u2028", "\u200b"],
    [chr(c) for c in range(0x4E00, 0x9FA5)],
    [chr(c) for c in range(0x3041, 0x3097)] + [chr(c) for c in range(0x30A1, 0x30FB)],
    [chr(c) for c in range(0xAC00, 0xD7A4)],
    [chr(c) for c in range(0x0410, 0x0450)] + [chr(c) for c in range(0x0391, 0x03CA)],
    [chr(c) for c in range(0x0621, 0x064B)] + [chr(c) for c in range(0x0905, 0x0940)],
    [chr(c) for c in range(0x00C0, 0x0180)],
    [chr(c) for c in range(0x0300, 0x0370)],  # combining marks
    [chr(c) for c in range(0x1F300, 0x1F650)] + ["\u200d", "\ufe0f"] + [chr(c) for c in range(0x1F3FB, 0x1F400)],
    [chr(c) for c in range(0xFF10, 0xFF5B)] + [chr(c) for c in range(0x2200, 0x2260)] + ["，", "。", "！", "？", "：", "；"],
    ["'s", "'t", "'re", "'ve", "'m", "'ll", "'d", "'S", "'LL", "<|", "|>", "_pad", "image", "\u0301"],
]


def fuzz_corpus(n: int = 5000, seed: int = 0) -> list[str]:
    rng = random.Random(seed)
    out = []
    for _ in range(n):
        pools = rng.sample(POOLS, rng.randint(1, 4))
        out.append("".join(rng.choice(rng.choice(pools)) for _ in range(rng.randint(1, 80))))
    return out


@pytest.fixture(scope="module")
def ranks(ranks_path) -> dict[bytes, int]:
    return tokenizer_asset.load_ranks(ranks_path)


@pytest.fixture(scope="module")
def reference(ranks) -> tiktoken.Encoding:
    return tiktoken.Encoding("qwen_reference", pat_str=QWEN_PATTERN, mergeable_ranks=ranks, special_tokens={})


@pytest.fixture(scope="module")
def hf(tokenizer_json) -> tokenizers.Tokenizer:
    """HF tokenizers on our file, with special tokens read as text (as SPEC 1.2 wants for user text)."""
    tok = tokenizers.Tokenizer.from_file(str(tokenizer_json))
    tok.encode_special_tokens = True
    return tok


def _mismatches(texts, reference, hf, qwen_tokenizer):
    expected = [reference.encode_ordinary(NFC(t)) for t in texts]
    got_hf = [e.ids for e in hf.encode_batch(texts, add_special_tokens=False)]
    got_rt = qwen_tokenizer.encode_batch(texts)
    bad_hf = [(t, e, g) for t, e, g in zip(texts, expected, got_hf) if e != g]
    bad_rt = [(t, e, g) for t, e, g in zip(texts, expected, got_rt) if e != g]
    return expected, bad_hf, bad_rt


# --- the ranks -------------------------------------------------------------


def test_ranks_file_is_the_pinned_one(ranks_path, ranks):
    data = ranks_path.read_bytes()
    assert len(data) == tokenizer_asset.RANKS_SIZE == 2_561_218
    assert hashlib.sha256(data).hexdigest() == tokenizer_asset.RANKS_SHA256
    assert len(ranks) == NUM_ORDINARY_TOKENS == 151_643
    assert sorted(ranks.values()) == list(range(NUM_ORDINARY_TOKENS))
    assert ranks[b"!"] == 0 and ranks[b"Hello"] == 9707 and ranks[b" world"] == 1879
    assert all(bytes([b]) in ranks for b in range(256))


@pytest.mark.parametrize("edit, message", [
    (lambda lines: lines[:1000], "1,000 tokens, expected 151,643"),
    (lambda lines: lines[:5] + [b"@@notbase64@@ 5"] + lines[6:], "line 6"),
    (lambda lines: lines[:7] + [b"IQ== 7"] + lines[8:], "line 8"),  # token of rank 0 again
    (lambda lines: lines[:9] + [lines[9].split()[0] + b" 3"] + lines[10:], "line 10"),  # rank 3 again
    (lambda lines: lines[:2] + [b"IQ=="] + lines[3:], "line 3"),
])
def test_load_ranks_names_the_corruption(tmp_path, ranks_path, edit, message):
    bad = tmp_path / "bad.tiktoken"
    bad.write_bytes(b"\n".join(edit(ranks_path.read_bytes().splitlines())))
    with pytest.raises(TokenizerError, match=message):
        tokenizer_asset.load_ranks(bad)


def _fake_pip(monkeypatch, member: bytes | None, returncode: int = 0):
    """Replace `pip download` by writing a fake dashscope wheel (no network in tests)."""
    calls = []

    def run(cmd, **kwargs):
        calls.append(cmd)
        dest = cmd[cmd.index("-d") + 1]
        buf = io.BytesIO()
        with zipfile.ZipFile(buf, "w") as z:
            z.writestr("dashscope/__init__.py", "")
            if member is not None:
                z.writestr(tokenizer_asset.RANKS_MEMBER, member)
        with open(f"{dest}/dashscope-2.0.2-py3-none-any.whl", "wb") as f:
            f.write(buf.getvalue())
        return subprocess.CompletedProcess(cmd, returncode, "", "ERROR: no network" if returncode else "")

    monkeypatch.setattr(tokenizer_asset.subprocess, "run", run)
    return calls


def test_fetch_ranks_extracts_verifies_and_writes_atomically(tmp_path, monkeypatch, ranks_path):
    calls = _fake_pip(monkeypatch, ranks_path.read_bytes())
    out = tmp_path / "sub" / "qwen.tiktoken"
    assert tokenizer_asset.fetch_ranks(out) == out
    assert out.read_bytes() == ranks_path.read_bytes()
    assert calls[0][1:4] == ["-m", "pip", "download"] and "dashscope==2.0.2" in calls[0]
    assert [p.name for p in out.parent.iterdir()] == ["qwen.tiktoken"]  # no temporary left behind
    tokenizer_asset.fetch_ranks(out)  # a verified file is kept: no second download
    assert len(calls) == 1


@pytest.mark.parametrize("member, returncode, message", [
    (b"IQ== 0\n", 0, "differs from the pinned b2b1b8dfb5cc5f024bafc373121c6aba3f66f9a5a0269e243470a1de16a33186"),
    (None, 0, "has no member dashscope/resources/qwen.tiktoken"),
    (b"", 1, r"failed \(exit 1\): ERROR: no network"),
])
def test_fetch_ranks_refuses(tmp_path, monkeypatch, member, returncode, message):
    _fake_pip(monkeypatch, member, returncode)
    out = tmp_path / "qwen.tiktoken"
    with pytest.raises(TokenizerError, match=message):
        tokenizer_asset.fetch_ranks(out)
    assert not out.exists()


# --- tokenizer.json ----------------------------------------------------------


def test_tokenizer_json_is_deterministic_and_loads(ranks, tokenizer_json):
    first = tokenizer_asset.build_tokenizer_json(ranks)
    assert first == tokenizer_asset.build_tokenizer_json(ranks)
    assert first == tokenizer_json.read_bytes()
    doc = json.loads(first)
    assert len(doc["model"]["vocab"]) == NUM_ORDINARY_TOKENS
    assert len(doc["model"]["merges"]) == NUM_ORDINARY_TOKENS - 256
    assert doc["model"]["merges"][:3] == ["Ġ Ġ", "ĠĠ ĠĠ", "i n"]
    assert {t["content"]: t["id"] for t in doc["added_tokens"]} == {s: i for i, s in SPECIAL_TOKENS.items()}
    hf = tokenizers.Tokenizer.from_file(str(tokenizer_json))
    assert hf.get_vocab_size(with_added_tokens=True) == TOKENIZER_SIZE
    assert hf.token_to_id("<|image_pad|>") == 151655


def test_validate_accepts_our_file(tokenizer_json):
    info = tokenizer_asset.validate_tokenizer_json(tokenizer_json)
    assert info["sha256"] == hashlib.sha256(tokenizer_json.read_bytes()).hexdigest()
    assert (info["vocab_size"], info["num_merges"]) == (151_669, 151_387)
    assert info["rank_consistent"] is True and info["rank_consistent_reason"] == ""
    assert info["special_tokens"]["<|im_start|>"] == 151644


def test_derive_merges_refuses_a_non_bpe_vocabulary():
    base = {bytes([b]): b for b in range(256)}
    assert tokenizer_asset.derive_merges({**base, b"ab": 256, b"abc": 257}) == [(b"a", b"b"), (b"ab", b"c")]
    with pytest.raises(TokenizerError, match=r"b'abc' \(rank 256\) does not merge"):
        tokenizer_asset.derive_merges({**base, b"abc": 256})
    del base[b"\x00"]
    with pytest.raises(TokenizerError, match=r"lack single bytes \[0\]"):
        tokenizer_asset.derive_merges(base)


def _edit_json(tokenizer_json, tmp_path, edit):
    doc = json.loads(tokenizer_json.read_bytes())
    edit(doc)
    path = tmp_path / "tokenizer.json"
    path.write_text(json.dumps(doc, ensure_ascii=False), encoding="utf-8")
    return path


def _set_special_id(doc, content, new_id):
    next(t for t in doc["added_tokens"] if t["content"] == content)["id"] = new_id


@pytest.mark.parametrize("edit, message", [
    (lambda d: _set_special_id(d, "<|image_pad|>", 151600), "<|image_pad|> has id 151600; SPEC 1.2 requires 151655"),
    (lambda d: d["added_tokens"].pop(1), r"lack SPEC special tokens <\|im_start\|> \(151644\)"),
    (lambda d: d["added_tokens"].append({"id": 151669, "content": "<extra>", "special": True}), "'<extra>'"),
    (lambda d: d["model"]["vocab"].update({"\u2581the": 5000}), "'▁the' is not byte-level"),
    (lambda d: d["model"]["vocab"].update({"Ġzzq": 160000}), "ids must be ints in 0..151668"),
])
def test_validate_refuses_a_wrong_file(tokenizer_json, tmp_path, edit, message):
    bad = _edit_json(tokenizer_json, tmp_path, edit)
    with pytest.raises(TokenizerError, match=message):
        tokenizer_asset.validate_tokenizer_json(bad)
    with pytest.raises(TokenizerError, match=message):
        Tokenizer.from_file(bad)


def test_validate_refuses_a_truncated_file(tokenizer_json, tmp_path):
    bad = tmp_path / "tokenizer.json"
    bad.write_bytes(tokenizer_json.read_bytes()[:1_000_000])
    for load in (tokenizer_asset.validate_tokenizer_json, Tokenizer.from_file):
        with pytest.raises(TokenizerError, match="not valid JSON"):
            load(bad)


# --- token-exactness against tiktoken -------------------------------------------


def test_corpus_parity(reference, hf, qwen_tokenizer):
    texts = HANDWRITTEN + fuzz_corpus()
    expected, bad_hf, bad_rt = _mismatches(texts, reference, hf, qwen_tokenizer)
    n_tokens, n_chars = sum(map(len, expected)), sum(map(len, texts))
    print(f"\n[parity] corpus: {len(texts)} texts, {n_chars:,} chars, {n_tokens:,} tokens; "
          f"mismatches: tokenizers {len(bad_hf)}, runtime {len(bad_rt)}")
    assert bad_hf == [] and bad_rt == []
    # Look-alikes stay ordinary; NFC is applied; decode gives the NFC text back.
    assert all(i < NUM_ORDINARY_TOKENS for ids in expected for i in ids)
    assert qwen_tokenizer.encode("e\u0301") == qwen_tokenizer.encode("\u00e9") == [963]
    assert [qwen_tokenizer.decode(ids) for ids in expected] == [NFC(t) for t in texts]


def test_plain_hf_reads_special_strings_as_special(tokenizer_json, qwen_tokenizer):
    """Why the runtime never hands user text to HF with its added tokens: they would match."""
    plain = tokenizers.Tokenizer.from_file(str(tokenizer_json))
    assert plain.encode("a<|image_pad|>", add_special_tokens=False).ids == [64, 151655]
    assert qwen_tokenizer.encode("a<|image_pad|>") == [64, 27, 91, 1805, 30290, 91, 29]


def test_every_vocabulary_token(ranks, reference, hf, qwen_tokenizer):
    by_id = sorted(ranks, key=ranks.__getitem__)
    # Byte-exact round trip of each id, ordinary and special.
    assert [qwen_tokenizer.decode_bytes([i]) for i in range(NUM_ORDINARY_TOKENS)] == by_id
    assert [qwen_tokenizer.decode([i]) for i in SPECIAL_TOKENS] == list(SPECIAL_TOKENS.values())
    texts = []
    for token in by_id:
        try:
            texts.append(token.decode("utf-8"))
        except UnicodeDecodeError:
            pass
    expected, bad_hf, bad_rt = _mismatches(texts, reference, hf, qwen_tokenizer)
    itself = sum(e == [ranks[t.encode()]] for t, e in zip(texts, expected))
    print(f"\n[parity] vocabulary: {len(texts):,} of {len(by_id):,} tokens are valid UTF-8 "
          f"({itself:,} encode to themselves); mismatches: tokenizers {len(bad_hf)}, runtime {len(bad_rt)}")
    assert bad_hf[:5] == [] and bad_rt[:5] == []
    assert hf.decode_batch([[ranks[t.encode()]] for t in texts]) == texts
