"""End-to-end latency, C++ runtime vs Python runtime, on the `make bench` workload, same run.

Usage (after `make cpp` and an exported bundle):
    .venv/bin/python runtime/cpp/tools/bench_e2e.py --bundle build/default [--iterations 30] [--json OUT]

Workload (vlfront.runtime.bench): scikit-image's rocket.jpg with a different JPEG
comment per image (same pixels, different bytes: nothing cached or deduplicated)
and the 64-token Chinese/English prompt; batch 1, batch 8 (8 distinct images),
and a cache hit (one repeated image, cache on). Each side runs in its own
process with the same ONNX Runtime settings (intra-op threads = all cores).
Timed per iteration: the Python side `Runtime.embed(requests)` on request dicts;
the C++ side builds its vlf_request objects from the same encoded bytes through
the C ABI (ctypes) and calls vlf_runtime_embed. Latencies are wall-clock seconds
of the whole call; p50 and p99 over `--iterations` after 3 warm-up runs.
"""

from __future__ import annotations

import argparse
import ctypes as C
import json
import pathlib
import subprocess
import sys

REPO = pathlib.Path(__file__).resolve().parents[3]


def child_python(bundle: str, iterations: int) -> list[dict]:
    from vlfront.runtime import Runtime
    from vlfront.runtime.bench import _request, _summarise, _time, distinct_jpegs, prompt_64

    rows = []
    images = distinct_jpegs(8)
    for name, batch, cached in (("batch1", 1, False), ("batch8", 8, False), ("cache_hit", 1, True)):
        with Runtime.load(bundle, cache_bytes=(256 << 20) if cached else 0) as rt:
            text = prompt_64(rt.tokenizer.encode, rt.tokenizer.decode)
            reqs = [_request(images[i], text) for i in range(batch)]
            rows.append(_summarise(name, "python", batch, *_time(lambda: rt.embed(reqs).timings, iterations)))
    return rows


def child_cpp(bundle: str, iterations: int, library: str) -> list[dict]:
    from vlfront.runtime.bench import _summarise, _time, distinct_jpegs, prompt_64
    from vlfront.runtime.tokenizer import Tokenizer

    lib = C.CDLL(library)
    P = C.c_void_p
    for fn, args in {"vlf_request_create": [C.POINTER(P)], "vlf_request_add_message": [P, C.c_char_p],
                     "vlf_request_add_text": [P, C.c_char_p, C.c_size_t],
                     "vlf_request_add_image_encoded": [P, C.c_char_p, C.c_size_t],
                     "vlf_runtime_options_create": [C.POINTER(P)], "vlf_runtime_options_set": [P, C.c_char_p, C.c_char_p],
                     "vlf_runtime_create": [C.c_char_p, P, C.POINTER(P)],
                     "vlf_runtime_embed": [P, C.POINTER(P), C.c_size_t, C.POINTER(P)],
                     "vlf_embeddings_get_timing": [P, C.c_char_p, C.POINTER(C.c_double)]}.items():
        getattr(lib, fn).argtypes, getattr(lib, fn).restype = args, P
    for fn in ("vlf_request_destroy", "vlf_embeddings_destroy", "vlf_runtime_destroy", "vlf_runtime_options_destroy"):
        getattr(lib, fn).argtypes, getattr(lib, fn).restype = [P], None

    def ok(status):
        if status:
            raise RuntimeError("vlfront C ABI call failed")

    tok = Tokenizer.from_file(pathlib.Path(bundle) / "tokenizer.json")
    text = prompt_64(tok.encode, tok.decode).encode()
    images = distinct_jpegs(8)
    rows = []
    for name, batch, cached in (("batch1", 1, False), ("batch8", 8, False), ("cache_hit", 1, True)):
        opts, rt = P(), P()
        ok(lib.vlf_runtime_options_create(C.byref(opts)))
        ok(lib.vlf_runtime_options_set(opts, b"cache_bytes", str((256 << 20) if cached else 0).encode()))
        ok(lib.vlf_runtime_create(bundle.encode(), opts, C.byref(rt)))
        lib.vlf_runtime_options_destroy(opts)

        def run():
            reqs = (P * batch)()
            for i in range(batch):
                h = P()
                ok(lib.vlf_request_create(C.byref(h)))
                reqs[i] = h
                ok(lib.vlf_request_add_message(reqs[i], b"user"))
                ok(lib.vlf_request_add_image_encoded(reqs[i], images[i], len(images[i])))
                ok(lib.vlf_request_add_text(reqs[i], text, len(text)))
            out = P()
            ok(lib.vlf_runtime_embed(rt, reqs, batch, C.byref(out)))
            timings = {}
            for stage in ("layout", "decode", "patch_embed", "fusion"):
                v = C.c_double()
                ok(lib.vlf_embeddings_get_timing(out, stage.encode(), C.byref(v)))
                timings[stage] = v.value
            lib.vlf_embeddings_destroy(out)
            for i in range(batch):
                lib.vlf_request_destroy(reqs[i])
            return timings

        rows.append(_summarise(name, "cpp", batch, *_time(run, iterations)))
        lib.vlf_runtime_destroy(rt)
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--bundle", default=str(REPO / "build/default"))
    ap.add_argument("--iterations", type=int, default=30)
    ap.add_argument("--library", default=str(REPO / "build/cpp/libvlfront.so"))
    ap.add_argument("--json", help="also write the rows here")
    ap.add_argument("--child", choices=["python", "cpp"], help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.child:
        rows = child_python(a.bundle, a.iterations) if a.child == "python" else child_cpp(a.bundle, a.iterations, a.library)
        print(json.dumps(rows))
        return
    rows = []
    for side in ("python", "cpp"):
        out = subprocess.run([sys.executable, __file__, "--child", side, "--bundle", a.bundle, "--iterations",
                              str(a.iterations), "--library", a.library], capture_output=True, text=True, check=True)
        rows += json.loads(out.stdout.strip().splitlines()[-1])
    print(f"{'case':10s} {'side':7s} {'p50 ms':>8s} {'p99 ms':>8s} {'req/s':>8s} {'decode':>8s} {'patch':>8s} {'fusion':>8s}")
    for r in rows:
        print(f"{r['case']:10s} {r['side']:7s} {r['p50_ms']:8.2f} {r['p99_ms']:8.2f} {r['req_per_s']:8.1f} "
              f"{r['decode_ms']:8.2f} {r['patch_embed_ms']:8.2f} {r['fusion_ms']:8.2f}")
    if a.json:
        pathlib.Path(a.json).write_text(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
