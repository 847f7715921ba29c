"""The C++ tokenizer is token-exact with the Python runtime's on a shared corpus (SPEC 1.2)."""

from __future__ import annotations

import json
import subprocess

import pytest

from corpus import edge_cases, prose_and_code


def cpp_encode(binary, tokenizer_file, texts: list[str]) -> list:
    lines = "".join(json.dumps(t) + "\n" for t in texts)
    proc = subprocess.run([str(binary), str(tokenizer_file)], input=lines.encode(), capture_output=True,
                          timeout=300, check=True)
    out = [json.loads(line) for line in proc.stdout.decode().splitlines()]
    assert len(out) == len(texts), proc.stderr.decode()
    return out


@pytest.fixture(scope="module")
def corpus() -> list[str]:
    return edge_cases() + prose_and_code(n_docs=300)


@pytest.mark.parametrize("asset", ["tokenizer.json", "qwen.tiktoken"])
def test_token_exact_with_python_runtime(cpp_tokenize_bin, qwen_tokenizer, tokenizer_json, ranks_path, corpus,
                                         asset):
    path = tokenizer_json if asset == "tokenizer.json" else ranks_path
    expected = [qwen_tokenizer.encode(t) for t in corpus]
    got = cpp_encode(cpp_tokenize_bin, path, corpus)
    bad = [(t, e, g) for t, e, g in zip(corpus, expected, got) if e != g]
    n_tokens = sum(map(len, expected))
    print(f"\n[cpp parity] {asset}: {len(corpus)} texts, {n_tokens:,} tokens, {len(bad)} mismatches")
    assert bad == [], bad[:3]
