"""The text corpus shared by the C++ tokenizer parity test and the tokenizer benchmark.

Three parts, all offline and deterministic:

* `edge_cases()`: the export tests' handwritten texts and seeded fuzz corpus
  (tests/export/test_tokenizer_asset.py) when that file is present, plus cases
  aimed at the C++ side: PCRE2's \\s versus Unicode White_Space, NUL, long
  runs that take the heap merge path, contractions with Unicode case folding.
* `prose_and_code()`: real text that ships with Python: the standard
  library's sources (code, comments, docstrings) cut into ~2 KB documents.
"""

from __future__ import annotations

import importlib.util
import pathlib
import random
import sysconfig

REPO = pathlib.Path(__file__).resolve().parents[2]

CPP_CASES = [
    "a\u180eb \u180e c",                       # U+180E: PCRE2's UCP \s takes it, Unicode White_Space does not
    "x\u0085y\u2028z\u2029w\u200bv\u00a0u",   # NEL, separators, zero-width space, NBSP
    "\x1c\x1d\x1e\x1f field separators \x1f",  # Python's isspace() but not White_Space
    "nul\x00inside and at end\x00",
    "a" * 500,                                 # one long \p{L}+ piece: heap merges
    "ab" * 300 + " " + "\u4e2d\u6587" * 200,
    " " * 300 + "x" + "\n" * 50 + "\t \t" * 40,
    "Ｉ'ＬＬ I'ſ it'S THEY'RE we'\u212a",       # full-width, long s, Kelvin sign under (?i:)
    "\U0001F600" * 100,
    "1234567890" * 30,
    "e\u0301" * 50 + "\u1e9b\u0323 \u0344 \u0958 \ufb2c \u2126",  # NFC compositions and exclusions
]


def _export_corpus() -> list[str]:
    path = REPO / "tests" / "export" / "test_tokenizer_asset.py"
    if not path.exists():
        return []
    try:
        spec = importlib.util.spec_from_file_location("_vlfront_export_tokenizer_corpus", path)
        mod = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(mod)
        return list(mod.HANDWRITTEN) + list(mod.fuzz_corpus())
    except Exception:  # noqa: BLE001 - that module is another test's; its corpus is a bonus here
        return []


def edge_cases() -> list[str]:
    return _export_corpus() + CPP_CASES


def prose_and_code(n_docs: int = 2000, doc_bytes: int = 2048, seed: int = 0) -> list[str]:
    """~n_docs documents of ~doc_bytes cut from the standard library's .py files."""
    root = pathlib.Path(sysconfig.get_paths()["stdlib"])
    files = sorted(p for p in root.glob("*.py") if p.is_file())
    rng = random.Random(seed)
    docs: list[str] = []
    for p in files:
        text = p.read_text(encoding="utf-8", errors="replace")
        for start in range(0, len(text), doc_bytes):
            docs.append(text[start:start + doc_bytes])
    rng.shuffle(docs)
    return docs[:n_docs]
