"""The C++ prefix encoder (Tokenizer::encode_prefix) equals Python's and the full encoding.

Same rules, same constants, same refusals: both keep encode(text)[:limit] (or all of it),
on adversarial texts with the cut window forced small, on random texts, and on 30 MiB ones.
"""

from __future__ import annotations

import json
import random
import subprocess
import sys
import pathlib

import pytest

sys.path.insert(0, str(pathlib.Path(__file__).parents[1] / "runtime"))
from test_text_prefix import TRICKY, adversarial  # noqa: E402

from vlfront.runtime.text_prefix import NoCutError, encode_prefix  # noqa: E402


def cpp_prefix(binary, tokenizer_file, texts, limit, full_chars=None, max_gap=None):
    args = [str(binary), str(tokenizer_file), "--prefix", str(limit)]
    if full_chars is not None:
        args += [str(full_chars), str(max_gap)]
    lines = "".join(json.dumps(t) + "\n" for t in texts).encode()
    proc = subprocess.run(args, input=lines, capture_output=True, timeout=300, check=True)
    out = [json.loads(line) for line in proc.stdout.decode().splitlines()]
    assert len(out) == len(texts), proc.stderr.decode()
    return out


def python_prefix(tok, text, limit, **kw):
    import unicodedata

    try:
        ids, complete = encode_prefix(tok._encode, unicodedata.normalize("NFC", text), limit, **kw)
    except NoCutError as e:
        return {"error": str(e)}
    return {"ids": ids, "complete": complete}


def random_texts(n: int, seed: int = 7) -> list[str]:
    rng = random.Random(seed)
    return ["".join(rng.choice(TRICKY) for _ in range(rng.randint(1, 80))) for _ in range(n)]


@pytest.mark.parametrize("limit", [1, 5, 37, 512])
def test_prefix_parity_with_forced_cuts(cpp_tokenize_bin, qwen_tokenizer, tokenizer_json, limit):
    texts = list(adversarial().values()) + random_texts(400)
    kw = {"full_chars": 0, "max_gap": 16}
    got = cpp_prefix(cpp_tokenize_bin, tokenizer_json, texts, limit, **kw)
    for text, g in zip(texts, got):
        want = python_prefix(qwen_tokenizer, text, limit, **kw)
        assert g == want, (text[:80], g, want)
        if "ids" in want:
            full = qwen_tokenizer.encode(text)
            assert want["ids"] == (full if want["complete"] else full[:limit])


def test_thirty_mib_texts_alike(cpp_tokenize_bin, qwen_tokenizer, tokenizer_json):
    units = ["hello world, this is 12 text. ", "7", "中文字，", "line one\n", "a"]
    texts = [u * ((30 << 20) // len(u.encode())) for u in units]
    got = cpp_prefix(cpp_tokenize_bin, tokenizer_json, texts, 512)
    for text, g in zip(texts, got):
        want = python_prefix(qwen_tokenizer, text, 512)
        assert g == want, (text[:20], str(g)[:300], str(want)[:300])
    assert "no place to cut it exactly" in got[-1]["error"]
