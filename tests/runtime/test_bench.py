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


def test_camera_bench_rows_and_ratios(tiny_bundle):
    from vlfront.runtime import bench_camera

    rows = bench_camera.child_camera(str(tiny_bundle), "fp32", 1, [0.3], ["exact", "fast", "fastest"], png_mp=0.3,
                                     batches=(1, 3))
    sides = {r["side"] for r in rows}
    assert {"reference", "baseline", "python-exact", "python-fast", "python-fastest"} <= sides
    assert {r["photo"] for r in rows} == {"0.3MP jpeg", "0.3MP png"} and {r["batch"] for r in rows} == {1, 3}
    for r in rows:
        assert r["p50_ms"] > 0 and r["decode_ms"] > 0
        if r["side"] != "reference":
            assert r["patch_embed_ms"] > 0 and r["fusion_ms"] > 0
            assert r["decode_ms"] + r["patch_embed_ms"] + r["fusion_ms"] <= r["p50_ms"] * 1.5
    summary = {(s["photo"], s["batch"]): s for s in bench_camera.summary(rows)}
    by = {(r["photo"], r["batch"], r["side"]): r for r in rows}
    s = summary[("0.3MP jpeg", 3)]
    ref = by[("0.3MP jpeg", 3, "reference")]["p50_ms"]
    assert abs(s["decode_vs_reference"] - by[("0.3MP jpeg", 3, "python-exact")]["decode_ms"] / ref) < 1e-9
    assert abs(s["fast_speedup_e2e"] - by[("0.3MP jpeg", 3, "python-exact")]["p50_ms"]
               / by[("0.3MP jpeg", 3, "python-fast")]["p50_ms"]) < 1e-9
    assert abs(s["fastest_speedup_e2e"] - by[("0.3MP jpeg", 3, "python-exact")]["p50_ms"]
               / by[("0.3MP jpeg", 3, "python-fastest")]["p50_ms"]) < 1e-9


def test_deviation_rows_per_mode(tiny_bundle):
    """The deviation table has a row per mode, kind and size; fastest scales 3 MP one step further than fast."""
    from vlfront.runtime import bench_camera

    rows = bench_camera.child_deviation(str(tiny_bundle), "fp32", [3], ("fast", "fastest"))
    by = {(r["mode"], r["kind"]): r for r in rows}
    assert set(by) == {(m, k) for m in ("fast", "fastest") for k in ("upscaled", "tiled")}
    assert by[("fast", "upscaled")]["scale"] == 2 and by[("fastest", "upscaled")]["scale"] == 4
    for r in rows:
        assert 0 < r["mean_abs"] < 1.0 and r["cosine_min"] <= r["cosine_mean"] <= 1.0


def test_camera_photos_are_distinct_bytes_same_pixels():
    from vlfront.runtime import bench_photos as bp

    for fmt in ("JPEG", "PNG"):
        copies = bp.distinct(bp.camera_photo(0.3, fmt, "chelsea.png"), 3)
        assert len(set(copies)) == 3
        px = [np.asarray(Image.open(io.BytesIO(c)).convert("RGB")) for c in copies]
        assert px[0].shape == (480, 640, 3) and all(np.array_equal(px[0], p) for p in px[1:])


def test_limits_reducing_gap_rows_start_from_fast_mode():
    """bench_limits' no-gap row is decode="fast" itself: its deviation is the deviation table's."""
    from vlfront.runtime import bench_limits, bench_photos as bp
    from vlfront.runtime.images import ImageSource

    rows = bench_limits.reducing_gap(None, rounds=1, sizes=(1,))
    assert {(r["kind"], r["reducing_gap"]) for r in rows} == {(k, g or 0.0) for k in ("upscaled", "tiled")
                                                               for g in bench_limits.GAPS}
    data = bp.camera_photo(1, "JPEG", bp.PHOTOS[0], seed=0, kind="upscaled")
    exact, fast = ImageSource(data).decode(), ImageSource(data, decode="fast").decode()
    base = next(r for r in rows if r["kind"] == "upscaled" and r["reducing_gap"] == 0.0)
    assert base["max_abs"] >= int(np.abs(exact.astype(np.int16) - fast).max())
    # 1 MP decodes at 1/2 (640x480): reducing_gap >= 1.5 leaves factor 1, the same pixels as no gap.
    same = [r for r in rows if r["kind"] == "upscaled" and r["reducing_gap"] >= 1.5]
    assert all((r["max_abs"], r["mean_abs"]) == (base["max_abs"], base["mean_abs"]) for r in same)
    assert all(r["resize_ms"] > 0 for r in rows)
