"""Patch-embedding stage time per precision, in the same run, with the runtime's own runner.

    python -m vlfront.calibration.speed --bundle build/default [--batch 8] [--runs 30] [--threads N]

Each precision gets its runner from `select_backend(bundle, backend, precision)`
(the session options the runtime serves with). Rounds interleave the
precisions so that a noisy neighbour slows them alike; the figure is the
median over all runs. Inputs are real photos (the held-out calibration
images, repeated to fill the batch).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time

import numpy as np

ROUNDS = 5


def time_patch_embed(bundle_dir, precisions=("fp32", "int8", "fp16"), batch: int = 8, runs: int = 30,
                     threads: int | None = None, backend: str = "onnxruntime") -> list[dict]:
    """Median seconds of one patch_embed call at `batch` images per precision present in the bundle."""
    from vlfront.calibration.data import load_calibration_set, pixels
    from vlfront.runtime.backends.base import select_backend
    from vlfront.runtime.bundle import Bundle

    bundle = Bundle.open(bundle_dir)
    have = [p for p in precisions if p in bundle.manifest["graphs"]["patch_embed"]]
    held = pixels(load_calibration_set().held_out, bundle.config.image_size)
    px = np.ascontiguousarray(np.resize(held, (batch, *held.shape[1:])))
    runners = {p: select_backend(bundle, backend, p, threads=threads).load() for p in have}
    times: dict[str, list[float]] = {p: [] for p in have}
    try:
        for p in have:
            for _ in range(3):
                runners[p].infer("patch_embed", {"pixel_values": px})
        per_round = max(1, -(-runs // ROUNDS))
        for _ in range(ROUNDS):
            for p in have:
                for _ in range(per_round):
                    t0 = time.perf_counter()
                    runners[p].infer("patch_embed", {"pixel_values": px})
                    times[p].append(time.perf_counter() - t0)
    finally:
        for r in runners.values():
            r.close()
    base = statistics.median(times["fp32"]) if "fp32" in times else None
    rows = []
    for p in have:
        med = statistics.median(times[p])
        rows.append({"precision": p, "backend": runners[p].name, "batch": batch, "runs": len(times[p]),
                     "median_ms": med * 1e3, "p10_ms": float(np.percentile(times[p], 10)) * 1e3,
                     "p90_ms": float(np.percentile(times[p], 90)) * 1e3,
                     "speedup_vs_fp32": base / med if base else float("nan")})
    return rows


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m vlfront.calibration.speed", description=__doc__.split("\n")[0])
    ap.add_argument("--bundle", required=True)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--runs", type=int, default=30)
    ap.add_argument("--threads", type=int, default=None, help="ONNX Runtime intra-op threads (default: all cores)")
    a = ap.parse_args(argv)
    rows = time_patch_embed(a.bundle, batch=a.batch, runs=a.runs, threads=a.threads)
    print(f"{'precision':<10} {'batch':>5} {'runs':>5} {'median ms':>10} {'p10':>8} {'p90':>8} {'vs fp32':>8}")
    for r in rows:
        print(f"{r['precision']:<10} {r['batch']:>5} {r['runs']:>5} {r['median_ms']:>10.2f} {r['p10_ms']:>8.2f} "
              f"{r['p90_ms']:>8.2f} {r['speedup_vs_fp32']:>7.2f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
