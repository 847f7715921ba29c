"""`vlfront bench`: the runtime against what a user would write by hand, in the same run.

Workload: scikit-image's rocket.jpg (640x427 JPEG) plus a 64-token Chinese/English
prompt per request; batches of 1 and 8 distinct images (the same photo with a
different JPEG comment each, so bytes differ and nothing is cached or deduplicated);
and a cache-hit run with one repeated image. The baseline is the PyTorch reference
module in eager fp32, SPEC reference preprocessing (PIL) and Hugging Face
`tokenizers`. Each side runs in its own process so that peak RSS is its own.
"""

from __future__ import annotations

import json
import os
import pathlib
import resource
import statistics
import subprocess
import sys
import time

import numpy as np

PROMPT_SEED = ("请描述这张图片中的火箭，并说明它的用途。Describe the rocket in this photo, its launch pad, "
               "the weather and what might happen next. 这枚火箭是什么型号？How tall is it? ")
CASES = (("batch1", 1, False), ("batch8", 8, False), ("cache_hit", 1, True))


def _photo_bytes() -> bytes:
    import skimage

    return (pathlib.Path(skimage.__file__).parent / "data" / "rocket.jpg").read_bytes()


def distinct_jpegs(n: int) -> list[bytes]:
    """The same JPEG n times with a different COM segment: same pixels and decode cost, different bytes."""
    data = _photo_bytes()
    out = []
    for i in range(n):
        comment = f"vlfront bench image {i}".encode()
        out.append(data[:2] + b"\xff\xfe" + (len(comment) + 2).to_bytes(2, "big") + comment + data[2:])
    return out


def prompt_64(tokenizer_encode, decode) -> str:
    ids = tokenizer_encode(PROMPT_SEED * 4)[:64]
    return decode(ids)


def _request(image, text):
    return [{"role": "user", "content": [{"type": "image", "image": image}, {"type": "text", "text": text}]}]


def _peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _summarise(name, side, batch, latencies, stages) -> dict:
    lat = sorted(latencies)
    p = lambda q: lat[min(len(lat) - 1, int(round(q * (len(lat) - 1))))]  # noqa: E731
    row = {"side": side, "case": name, "batch": batch, "iterations": len(lat),
           "req_per_s": batch / statistics.median(lat), "p50_ms": p(0.5) * 1e3, "p99_ms": p(0.99) * 1e3}
    for k in ("tokenize", "decode", "patch_embed", "fusion"):
        row[f"{k}_ms"] = statistics.median(s.get(k, 0.0) for s in stages) * 1e3 if stages else float("nan")
    return row


def _time(fn, iterations: int, warmup: int = 3):
    for _ in range(warmup):
        fn()
    latencies, stages = [], []
    for _ in range(iterations):
        t0 = time.perf_counter()
        st = fn()
        latencies.append(time.perf_counter() - t0)
        stages.append(st or {})
    return latencies, stages


def child_runtime(bundle: str, precision: str, iterations: int) -> list[dict]:
    from vlfront.runtime import Runtime

    rows = []
    images = distinct_jpegs(8)
    with Runtime.load(bundle, precision=precision, cache_bytes=0) as rt:
        text = prompt_64(rt.tokenizer.encode, rt.tokenizer.decode)
        tok_lat, _ = _time(lambda: rt.tokenizer.encode(text), iterations * 10)
        for name, batch, cached in CASES[:2]:
            reqs = [_request(images[i], text) for i in range(batch)]

            def run():
                t = rt.embed(reqs).timings
                return {"tokenize": statistics.median(tok_lat) * batch, **t}

            rows.append(_summarise(name, "vlfront", batch, *_time(run, iterations)))
    with Runtime.load(bundle, precision=precision) as rt:
        reqs = [_request(images[0], text)]
        rows.append(_summarise("cache_hit", "vlfront", 1, *_time(lambda: rt.embed(reqs).timings, iterations)))
    for r in rows:
        r["peak_rss_mib"] = _peak_rss_mib()
        r["tokenize_share"] = r["tokenize_ms"] / r["p50_ms"] if r["case"] != "cache_hit" else float("nan")
    return rows


def child_baseline(bundle: str, iterations: int) -> list[dict]:
    """What a user writes by hand: PIL + HF tokenizers + the PyTorch reference in eager fp32."""
    import io

    import torch
    from PIL import Image, ImageOps
    from tokenizers import Tokenizer

    from vlfront.config import IM_END_ID, IM_START_ID, IMAGE_PAD_ID, PAD_ID, VISION_END_ID, VISION_START_ID
    from vlfront.export.reference import FrontEnd, FusionStage, PatchEmbedStage
    from vlfront.runtime.bundle import Bundle

    b = Bundle.open(bundle)
    front = FrontEnd(b.config).load(b.path("weights.safetensors"))
    patch, fusion = PatchEmbedStage(front).eval(), FusionStage(front).eval()
    tok = Tokenizer.from_file(str(b.path("tokenizer.json")))
    enc = lambda s: tok.encode(s, add_special_tokens=False).ids  # noqa: E731
    text = prompt_64(enc, lambda ids: tok.decode(ids))
    images = distinct_jpegs(8)

    def layout(t):
        ids = [IM_START_ID] + enc("user\n") + [VISION_START_ID] + [IMAGE_PAD_ID] * 196 + [VISION_END_ID]
        ids += enc(t) + [IM_END_ID] + enc("\n") + [IM_START_ID] + enc("assistant\n")
        return ids + [PAD_ID] * (1024 - len(ids))

    def pixels(data):
        im = ImageOps.exif_transpose(Image.open(io.BytesIO(data))).convert("RGB")
        return np.asarray(im.resize((224, 224), Image.BICUBIC), np.uint8)

    rows = []
    with torch.inference_mode():
        for name, batch, _ in CASES:
            data = [images[i] for i in range(batch)]

            def run():
                t0 = time.perf_counter()
                ids = torch.tensor([layout(text) for _ in data])
                t1 = time.perf_counter()
                px = torch.from_numpy(np.stack([pixels(d) for d in data]))
                t2 = time.perf_counter()
                vt = patch(px)
                t3 = time.perf_counter()
                fusion(ids, vt)
                return {"tokenize": t1 - t0, "decode": t2 - t1, "patch_embed": t3 - t2,
                        "fusion": time.perf_counter() - t3}

            rows.append(_summarise(name, "baseline", batch, *_time(run, iterations)))
    for r in rows:
        r["peak_rss_mib"] = _peak_rss_mib()
        r["tokenize_share"] = r["tokenize_ms"] / r["p50_ms"]
    return rows


def _child(kind: str, bundle: str, precision: str, iterations: int, extra=None) -> list[dict]:
    cmd = [sys.executable, "-m", "vlfront.runtime.bench", kind, bundle, precision, str(iterations), json.dumps(extra)]
    r = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, "TOKENIZERS_PARALLELISM": "false"})
    if r.returncode != 0:
        from vlfront.errors import VlfrontError

        raise VlfrontError(f"bench {kind} process failed:\n{r.stderr[-2000:]}")
    return json.loads(r.stdout.strip().splitlines()[-1])


def run_bench(bundle: str, out_dir: str, precisions: tuple[str, ...] = ("fp32",), iterations: int = 30,
              photos: tuple[float, ...] = (), decode: tuple[str, ...] = ("exact", "fast", "fastest")) -> list[dict]:
    """Run the baseline once and the runtime per precision; print one table; save CSV + Parquet + PNG.

    With `photos` (sizes in MP, runtime/bench_photos.py), also the camera-photo runs of
    runtime/bench_camera.py per decode mode, their peak RSS and the fast-vs-exact deviation
    (printed; saved as camera.*, camera_summary.csv, rss.csv, deviation.csv).
    """
    print(f"[bench] baseline (PyTorch eager fp32 + PIL + HF tokenizers), {iterations} iterations ...", file=sys.stderr)
    base = _child("baseline", bundle, "fp32", iterations)
    ours = []
    for precision in precisions:
        print(f"[bench] vlfront runtime ({precision}) ...", file=sys.stderr)
        rows = _child("runtime", bundle, precision, iterations)
        for r in rows:
            r["side"] = f"vlfront-{precision}"
        ours += rows
    by_case = {r["case"]: r for r in base}
    for r in ours + base:
        r["speedup_vs_baseline"] = r["req_per_s"] / by_case[r["case"]]["req_per_s"]
    rows = ours + base
    _print_table(rows)
    _save(rows, pathlib.Path(out_dir))
    if photos:
        run_camera(bundle, out_dir, photos, decode, max(5, iterations // 6))
    return rows


def run_camera(bundle: str, out_dir: str, photos, decode, iterations: int) -> dict:
    """The camera-photo part of `vlfront bench` (runtime/bench_camera.py); returns its tables."""
    import polars as pl

    from vlfront.runtime import bench_camera

    out = pathlib.Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    print(f"[bench] camera photos {list(photos)} MP, decode {list(decode)}, {iterations} interleaved iterations "
          "(reference, baseline, Python and C++ in one process) ...", file=sys.stderr)
    rows = _child("camera", bundle, "fp32", iterations, {"sizes": list(photos), "modes": list(decode)})
    summary = bench_camera.summary(rows)
    print("[bench] fast-vs-exact deviation (runtime/bench_photos.py) ...", file=sys.stderr)
    dev = _child("deviation", bundle, "fp32", 0,
                 {"sizes": list(photos), "modes": [m for m in decode if m != "exact"] or ["fast"]})
    rss = []
    sides = ["python"] + (["cpp"] if bench_camera.cpp_library().exists() else [])
    for side in sides:
        for mode in decode:
            rss += _child("rss", bundle, "fp32", 0, {"side": side, "mode": mode})
    png = _child("png", bundle, "fp32", 0)
    tables = {"camera": rows, "camera_summary": summary, "deviation": dev, "rss": rss, "png_reduce": png}
    for name, table in tables.items():
        print(f"\n[bench] {name}")
        _print_rows(table)
        pl.DataFrame(table).write_csv(out / f"{name}.csv")
    pl.DataFrame(rows).write_parquet(out / "camera.parquet")
    return tables


def _print_rows(rows: list[dict]) -> None:
    if not rows:
        return
    cols = list(rows[0])
    print(" | ".join(f"{c:>12.12}" for c in cols))
    for r in rows:
        print(" | ".join(f"{r[c]:>12.4g}" if isinstance(r[c], float) else f"{str(r[c]):>12.12}" for c in cols))


def _print_table(rows: list[dict]) -> None:
    cols = ["side", "case", "req_per_s", "p50_ms", "p99_ms", "tokenize_ms", "decode_ms", "patch_embed_ms",
            "fusion_ms", "tokenize_share", "peak_rss_mib", "speedup_vs_baseline"]
    print(" | ".join(f"{c:>14}" for c in cols))
    for r in rows:
        print(" | ".join(f"{r[c]:>14.3f}" if isinstance(r[c], float) else f"{str(r[c]):>14}" for c in cols))


def _save(rows: list[dict], out: pathlib.Path) -> None:
    import polars as pl

    out.mkdir(parents=True, exist_ok=True)
    df = pl.DataFrame(rows)
    df.write_csv(out / "bench.csv")
    df.write_parquet(out / "bench.parquet")
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return
    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    cases = [c for c, _, _ in CASES]
    sides = ["baseline"] + [s for s in dict.fromkeys(r["side"] for r in rows) if s != "baseline"]
    width = 0.8 / len(sides)
    for ax, metric, title in ((axes[0], "req_per_s", "throughput (req/s, higher is better)"),
                              (axes[1], "p99_ms", "p99 latency per batch (ms, lower is better)")):
        for k, side in enumerate(sides):
            vals = [next(r[metric] for r in rows if r["side"] == side and r["case"] == c) for c in cases]
            ax.bar(np.arange(len(cases)) + k * width, vals, width, label=side)
        ax.set_xticks(np.arange(len(cases)) + 0.4 - width / 2, cases)
        ax.set_title(title, fontsize=9)
        ax.set_yscale("log")
        ax.legend()
    fig.suptitle("vlfront runtime vs PyTorch eager baseline (rocket.jpg + 64-token prompt)")
    fig.tight_layout()
    fig.savefig(out / "bench.png", dpi=100)
    print(f"[bench] saved {out}/bench.csv, bench.parquet, bench.png", file=sys.stderr)


def bench_command(args) -> None:
    photos = tuple(float(p) if "." in p else int(p) for p in getattr(args, "photos", "").split(",") if p.strip())
    decode = tuple(m.strip() for m in getattr(args, "decode", "exact,fast,fastest").split(",") if m.strip())
    run_bench(args.bundle, args.out, tuple(p.strip() for p in args.precision.split(",")), args.iterations,
              photos, decode)


def _main(argv: list[str]) -> list[dict]:
    kind, bundle, precision, iterations = argv[1], argv[2], argv[3], int(argv[4])
    extra = json.loads(argv[5]) if len(argv) > 5 else None
    if kind in ("camera", "rss", "deviation", "png"):
        from vlfront.runtime import bench_camera

        if kind == "camera":
            return bench_camera.child_camera(bundle, precision, iterations, extra["sizes"], extra["modes"])
        if kind == "deviation":
            return bench_camera.child_deviation(bundle, precision, extra["sizes"], tuple(extra.get("modes", ["fast"])))
        if kind == "png":
            return bench_camera.child_png()
        return [bench_camera.child_rss(bundle, extra["side"], extra["mode"])]
    return child_runtime(bundle, precision, iterations) if kind == "runtime" else child_baseline(bundle, iterations)


if __name__ == "__main__":
    print(json.dumps(_main(sys.argv)))
