"""What bounds the two decode targets that `make bench` misses, measured (docs/images.md, "Limits").

    .venv/bin/python -m vlfront.runtime.bench_limits [--bundle build/default] [--rounds 15]

Three tables, medians over `rounds`, one process, nothing else of vlfront loaded but Pillow:

* `scaling`: 8 bare Pillow operations (bicubic resize to a third of the size; JPEG load) on
  the calling thread vs the caller + one helper of runtime/decode_pool.py, by image size. A
  2-thread speed-up under 2 for images over a core's L2 (Pillow keeps 4 bytes a pixel) says
  the batch-8 target at 0.3-1 MP is bounded by memory traffic, not by the runtime's Python.
* `fast_floor`: each step of decode="fast" on the 12 MP photo (DCT-scaled load at 1/4, what
  fast mode uses, and at 1/8, where nearly only the entropy decoding is left; the resize
  from 1008x756; the key's SHA-256), the part of a fast request no resize change can remove.
* `reducing_gap`: Pillow's `resize(..., reducing_gap=g)` after the 1/4 load instead of the
  plain SPEC bicubic: resize time, and (with --bundle) pixel and visual-token deviation from
  exact over bench_photos.PHOTOS, upscaled and tiled, at 1, 3 and 12 MP.
"""

from __future__ import annotations

import argparse
import io
import statistics
import time

import numpy as np

GAPS = (None, 3.0, 2.0, 1.5, 1.0)


def _median_ms(fn, rounds: int) -> float:
    fn()
    times = []
    for _ in range(rounds):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times) * 1e3


def scaling(rounds: int = 15) -> list[dict]:
    from concurrent.futures import ThreadPoolExecutor

    from PIL import Image

    from vlfront.runtime import bench_photos as bp
    from vlfront.runtime.decode_pool import decode_all

    pool = ThreadPoolExecutor(2)
    rng = np.random.default_rng(0)
    rows = []
    for w, h in ((320, 240), (640, 480), (1280, 960), (2048, 1536)):
        ims = [Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)) for _ in range(8)]
        resize = lambda im, w=w, h=h: im.resize((w // 3, h // 3), Image.BICUBIC)  # noqa: E731
        row = {"image": f"{w}x{h}", "pillow_mib": w * h * 4 / 2**20}
        seq = _median_ms(lambda: [resize(im) for im in ims], rounds)
        par = _median_ms(lambda: decode_all(pool, ims, resize, 2), rounds)
        row.update({"resize_x8_ms": seq, "resize_x8_2threads_ms": par, "resize_speedup": seq / par})
        mp = {320: None, 640: 0.3, 1280: 1, 2048: 3}[w]
        if mp is not None:
            datas = bp.distinct(bp.camera_photo(mp, "JPEG", "coffee.png"), 8)
            load = lambda d: Image.open(io.BytesIO(d)).load()  # noqa: E731
            seq = _median_ms(lambda: [load(d) for d in datas], rounds)
            par = _median_ms(lambda: decode_all(pool, datas, load, 2), rounds)
            row.update({"jpeg_load_x8_ms": seq, "jpeg_load_x8_2threads_ms": par, "jpeg_load_speedup": seq / par})
        rows.append(row)
    pool.shutdown()
    return rows


def fast_floor(rounds: int = 15, mp: float = 12) -> list[dict]:
    import hashlib

    from PIL import Image

    from vlfront.runtime import bench_photos as bp
    from vlfront.runtime.images import ImageSource

    data = bp.camera_photo(mp, "JPEG", "coffee.png")

    def load(side):
        im = Image.open(io.BytesIO(data))
        if side:
            im.draft(None, (side, side))
        im.load()
        return im

    quarter = load(448)
    steps = {
        "load_full": lambda: load(0),
        "load_1/4 (fast mode)": lambda: load(448),
        "load_1/8 (entropy decoding + DC only)": lambda: load(300),
        f"resize {quarter.size[0]}x{quarter.size[1]} -> 224": lambda: quarter.resize((224, 224), Image.BICUBIC),
        "sha256 of the file (the key)": lambda: hashlib.sha256(data).digest(),
        "ImageSource(decode='fast').decode()": ImageSource(data, decode="fast").decode,
        "ImageSource(decode='exact').decode()": ImageSource(data).decode,
    }
    return [{"step": k, "mp": mp, "file_kib": len(data) / 1024, "ms": _median_ms(fn, rounds)} for k, fn in steps.items()]


def reducing_gap(bundle: str | None, rounds: int = 15, sizes=(1, 3, 12)) -> list[dict]:
    from PIL import Image

    from vlfront.runtime import bench_photos as bp
    from vlfront.runtime.images import ImageSource

    runner = None
    if bundle:
        from vlfront.runtime.backends.base import select_backend
        from vlfront.runtime.bundle import Bundle

        runner = select_backend(Bundle.open(bundle), "onnxruntime", "fp32").load()

    def fast(data, gap):
        if gap is None:  # what decode="fast" does now
            return ImageSource(data, decode="fast").decode()
        im = Image.open(io.BytesIO(data))
        im.draft(None, (448, 448))
        return np.asarray(im.convert("RGB").resize((224, 224), Image.BICUBIC, reducing_gap=gap))

    rows = []
    try:
        for kind in ("upscaled", "tiled"):
            for mp in sizes:
                datas = [bp.camera_photo(mp, "JPEG", p, seed=k, kind=kind) for k, p in enumerate(bp.PHOTOS)]
                exact = np.stack([ImageSource(d).decode() for d in datas])
                quarter = Image.open(io.BytesIO(datas[0]))
                quarter.draft(None, (448, 448))
                quarter = quarter.convert("RGB")
                for gap in GAPS:
                    row = {"kind": kind, "mp": mp, "reducing_gap": gap or 0.0,
                           "resize_ms": _median_ms(lambda g=gap: quarter.resize((224, 224), Image.BICUBIC,
                                                                                reducing_gap=g), rounds)}
                    px = np.stack([fast(d, gap) for d in datas])
                    diff = np.abs(exact.astype(np.int16) - px)
                    row.update({"max_abs": int(diff.max()), "mean_abs": float(diff.mean()), "psnr_db": bp.psnr(exact, px)})
                    if runner is not None:
                        vt = lambda p: runner.infer("patch_embed", {"pixel_values": p})["visual_tokens"]  # noqa: E731
                        cos = bp.token_cosines(vt(exact), vt(px))
                        row.update({"cosine_min": float(cos.min()), "cosine_mean": float(cos.mean())})
                    rows.append(row)
    finally:
        if runner is not None:
            runner.close()
    return rows


def _print(name: str, rows: list[dict]) -> None:
    print(f"\n[{name}]")
    cols = list(dict.fromkeys(c for r in rows for c in r))
    print(" | ".join(cols))
    for r in rows:
        print(" | ".join(f"{r.get(c):.6g}" if isinstance(r.get(c), float) else str(r.get(c, "")) for c in cols))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--bundle", help="bundle for the visual-token cosines of the reducing_gap table")
    ap.add_argument("--rounds", type=int, default=15)
    a = ap.parse_args()
    from vlfront.runtime.memory import tune_malloc

    tune_malloc()  # as Runtime.load does
    _print("scaling", scaling(a.rounds))
    _print("fast_floor", fast_floor(a.rounds))
    _print("reducing_gap", reducing_gap(a.bundle, a.rounds))


if __name__ == "__main__":
    main()
