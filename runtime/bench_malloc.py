"""A/B of runtime/memory.tune_malloc: decode time and minor page faults in a 2-thread pool.

    .venv/bin/python -m vlfront.runtime.bench_malloc [--rounds 5]

Child processes alternate between VLFRONT_MALLOC_TUNING=0 (glibc defaults) and 1 (the
runtime's settings), each timing 5 decodes of 3 MP and 12 MP camera photos at batch 1 and 8
(SPEC 1.4 exact, ImageSource.decode on a 2-thread pool); medians over the rounds.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time


def child() -> dict:
    from concurrent.futures import ThreadPoolExecutor

    from vlfront.runtime import bench_photos as bp
    from vlfront.runtime.images import ImageSource
    from vlfront.runtime.memory import tune_malloc

    out: dict = {"applied": tune_malloc()}
    pool = ThreadPoolExecutor(2)
    for mp in (3, 12):
        sources = [ImageSource(d) for d in bp.distinct(bp.camera_photo(mp, "JPEG", "coffee.png"), 8)]
        for batch in (1, 8):
            run = lambda: list(pool.map(lambda s: s.decode(), sources[:batch]))  # noqa: E731
            run()
            times, faults = [], []
            for _ in range(5):
                f0 = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
                t0 = time.perf_counter()
                run()
                times.append(time.perf_counter() - t0)
                faults.append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - f0)
            out[f"{mp}MP batch {batch}"] = (statistics.median(times) * 1e3, statistics.median(faults) / batch)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.child:
        print(json.dumps(child()))
        return
    res: dict[str, list] = {"0": [], "1": []}
    for _ in range(a.rounds):
        for flag in res:
            p = subprocess.run([sys.executable, "-m", "vlfront.runtime.bench_malloc", "--child"], capture_output=True,
                               text=True, check=True, env={**os.environ, "VLFRONT_MALLOC_TUNING": flag})
            res[flag].append(json.loads(p.stdout.strip().splitlines()[-1]))
    print(f"tuning applied: {res['1'][0]['applied']}")
    for key in (k for k in res["0"][0] if k != "applied"):
        (d, df), (t, tf) = ([statistics.median(r[key][i] for r in res[f]) for i in (0, 1)] for f in ("0", "1"))
        print(f"{key}: glibc defaults {d:.1f} ms, {df:.0f} faults/image | tuned {t:.1f} ms, {tf:.0f} faults/image "
              f"| {d / t:.2f}x")


if __name__ == "__main__":
    main()
