"""Tokenizer throughput on one thread, same corpus, same run: C++ vs tiktoken vs HF tokenizers.

Usage (after `make cpp`):
    .venv/bin/python runtime/cpp/tools/bench_tokenizer.py [--repeat 3] [--json OUT]

Every side encodes each corpus text separately (what a server does per
request), NFC included: tiktoken as encode_ordinary(unicodedata NFC(text)),
the SPEC reference; HF tokenizers on the bundle tokenizer.json with
RAYON_NUM_THREADS=1; C++ through build/cpp/tools/vlfront-tokenize --bench.
The best of `--repeat` timed passes is reported for each side.
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import subprocess
import sys
import tempfile
import time
import unicodedata

os.environ["RAYON_NUM_THREADS"] = "1"  # before tokenizers is imported
os.environ["TOKENIZERS_PARALLELISM"] = "false"

REPO = pathlib.Path(__file__).resolve().parents[3]
sys.path.insert(0, str(REPO / "tests" / "cpp"))

from corpus import edge_cases, prose_and_code  # noqa: E402


def _best(fn, repeat: int) -> tuple[float, int]:
    fn()  # warm-up
    best, tokens = float("inf"), 0
    for _ in range(repeat):
        t0 = time.perf_counter()
        tokens = fn()
        best = min(best, time.perf_counter() - t0)
    return best, tokens


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--ranks", default=str(REPO / "build/cache/qwen.tiktoken"))
    ap.add_argument("--tokenizer-json", default=str(REPO / "build/cache/tokenizer.json"))
    ap.add_argument("--binary", default=str(REPO / "build/cpp/tools/vlfront-tokenize"))
    ap.add_argument("--json", help="also write the results here")
    args = ap.parse_args()

    import tiktoken
    import tokenizers

    from vlfront.config import QWEN_PATTERN
    from vlfront.export.tokenizer_asset import load_ranks

    texts = edge_cases() + prose_and_code()
    n_bytes = sum(len(t.encode()) for t in texts)
    enc = tiktoken.Encoding("qwen", pat_str=QWEN_PATTERN, mergeable_ranks=load_ranks(args.ranks), special_tokens={})
    hf = tokenizers.Tokenizer.from_file(args.tokenizer_json)
    hf.encode_special_tokens = True

    def run_tiktoken() -> int:
        return sum(len(enc.encode_ordinary(unicodedata.normalize("NFC", t))) for t in texts)

    def run_hf() -> int:
        return sum(len(hf.encode(t, add_special_tokens=False).ids) for t in texts)

    results = {}
    for name, fn in (("tiktoken", run_tiktoken), ("hf_tokenizers", run_hf)):
        s, n = _best(fn, args.repeat)
        results[name] = {"tokens": n, "seconds": s, "tokens_per_s": n / s, "mb_per_s": n_bytes / s / 1e6}

    with tempfile.NamedTemporaryFile("w", suffix=".jsonl", delete=False) as f:
        f.writelines(json.dumps(t) + "\n" for t in texts)
    try:
        best = None
        for _ in range(args.repeat):
            out = subprocess.run([args.binary, args.tokenizer_json, "--bench", f.name, "--repeat", "1"],
                                 capture_output=True, text=True, check=True).stdout
            r = json.loads(out)
            if best is None or r["seconds"] < best["seconds"]:
                best = r
    finally:
        os.unlink(f.name)
    results["cpp"] = {k: best[k] for k in ("tokens", "seconds", "tokens_per_s", "mb_per_s")}

    summary = {"texts": len(texts), "bytes": n_bytes, "threads": 1, "results": results,
               "cpp_vs_tiktoken": results["cpp"]["tokens_per_s"] / results["tiktoken"]["tokens_per_s"],
               "cpp_vs_hf": results["cpp"]["tokens_per_s"] / results["hf_tokenizers"]["tokens_per_s"]}
    tokens = {r["tokens"] for r in results.values()}
    summary["same_token_count"] = len(tokens) == 1
    for name, r in results.items():
        print(f"{name:14s} {r['tokens_per_s'] / 1e6:7.2f} M tokens/s  {r['mb_per_s']:7.1f} MB/s  ({r['tokens']:,} tokens)")
    print(f"C++ / tiktoken = {summary['cpp_vs_tiktoken']:.2f}x, C++ / HF tokenizers = {summary['cpp_vs_hf']:.2f}x")
    if args.json:
        pathlib.Path(args.json).write_text(json.dumps(summary, indent=2))


if __name__ == "__main__":
    main()
