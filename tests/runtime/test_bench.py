"""`vlfront bench` machinery (the speed targets themselves live in `make bench`, not in tests)."""

import io

import numpy as np
import polars as pl
from PIL import Image

from vlfront.runtime.bench import distinct_jpegs, prompt_64, run_bench


def test_bench_images_differ_in_bytes_but_not_in_pixels():
    images = distinct_jpegs(3)
    assert len(set(images)) == 3
    pixels = [np.asarray(Image.open(io.BytesIO(b)).convert("RGB")) for b in images]
    assert pixels[0].shape == (427, 640, 3)
    assert all(np.array_equal(pixels[0], p) for p in pixels[1:])


def test_prompt_is_64_tokens(qwen_tokenizer):
    text = prompt_64(qwen_tokenizer.encode, qwen_tokenizer.decode)
    assert len(qwen_tokenizer.encode(text)) in range(60, 69)  # re-encoding a cut text may merge differently
    assert any("\u4e00" <= ch <= "\u9fff" for ch in text) and any(ch.isascii() and ch.isalpha() for ch in text)


def test_bench_writes_one_table_for_both_sides(tiny_bundle, tmp_path):
    rows = run_bench(str(tiny_bundle), str(tmp_path), ("fp32",), iterations=3)
    df = pl.read_parquet(tmp_path / "bench.parquet")
    assert df.height == 6 and set(df["side"]) == {"vlfront-fp32", "baseline"}
    assert set(df["case"]) == {"batch1", "batch8", "cache_hit"}
    assert (df["req_per_s"] > 0).all() and (df["p99_ms"] >= df["p50_ms"]).all()
    base = {r["case"]: r["req_per_s"] for r in rows if r["side"] == "baseline"}
    for r in rows:
        assert abs(r["speedup_vs_baseline"] - r["req_per_s"] / base[r["case"]]) < 1e-9
    assert (tmp_path / "bench.csv").read_text().startswith("side,case,batch")
    assert (tmp_path / "bench.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
