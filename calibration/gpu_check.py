"""`make gpu-check`: TensorRT engines against ONNX Runtime on the CPU, and their speed.

    python -m vlfront.calibration.gpu_check --bundle build/default [--out build/gpu-check.json]

On a machine with a CUDA GPU and TensorRT: builds the engines (`build_engines`),
then for every precision the bundle serves compares TensorRT against ONNX
Runtime CPU at the same precision, and against ONNX Runtime fp32, on the
held-out calibration images with the gate's figures and thresholds (per graph
and end to end), and times the patch-embedding stage at batch 1, 8 and 32
(host-to-device and back included). Prints a table, writes JSON, exits 1 when
a comparison fails the gate. Without a GPU it prints one line saying why it
skipped and exits 0; where a GPU is visible (nvidia-smi lists one, or
/dev/nvidia0 exists) but TensorRT or a CUDA torch is missing, it FAILS (exit 2)
naming what is missing and `make gpu-setup`, so a T4 machine cannot pass
without having run TensorRT.
"""

from __future__ import annotations

import argparse
import glob
import json
import pathlib
import shutil
import statistics
import subprocess
import sys
import time

import numpy as np

BATCHES = (1, 8, 32)


def _compare(bundle_dir, precision: str, thresholds, held, held_px) -> list[dict]:
    from vlfront.calibration import gate
    from vlfront.runtime import Runtime

    rows = []
    runtimes = {(b, p): Runtime.load(bundle_dir, backend=b, precision=p)
                for b, p in (("tensorrt", precision), ("onnxruntime", precision), ("onnxruntime", "fp32"))}
    try:
        trt = runtimes[("tensorrt", precision)]
        requests = gate.requests_for(held)
        got_vis = gate.patch_embed_tokens(trt.runner, held_px)
        got = gate.embed_all(trt, requests)
        for ref_key in dict.fromkeys((("onnxruntime", precision), ("onnxruntime", "fp32"))):
            ref_rt = runtimes[ref_key]
            label = f"tensorrt {precision} vs onnxruntime {ref_key[1]}"
            rows.append(gate.row(label, "patch_embed", "visual_tokens",
                                  gate.figures(got_vis, gate.patch_embed_tokens(ref_rt.runner, held_px)), thresholds))
            ref = gate.embed_all(ref_rt, requests)
            mask = [r.attention_mask.astype(bool) for r in ref]
            rows.append(gate.row(label, "end_to_end", "inputs_embeds[all tokens]",
                                  gate.figures(np.concatenate([o.inputs_embeds[m] for o, m in zip(got, mask)]),
                                               np.concatenate([r.inputs_embeds[m] for r, m in zip(ref, mask)])),
                                  thresholds))
    finally:
        for rt in runtimes.values():
            rt.close()
    return rows


def _timings(bundle_dir, precision: str, held_px: np.ndarray, runs: int) -> list[dict]:
    from vlfront.runtime.backends.base import select_backend
    from vlfront.runtime.bundle import Bundle

    bundle = Bundle.open(bundle_dir)
    rows = []
    for backend in ("tensorrt", "onnxruntime"):
        with select_backend(bundle, backend, precision) as runner:
            for batch in BATCHES:
                px = np.ascontiguousarray(np.resize(held_px, (batch, *held_px.shape[1:])))
                for _ in range(3):
                    runner.infer("patch_embed", {"pixel_values": px})
                times = []
                for _ in range(runs):
                    t0 = time.perf_counter()
                    runner.infer("patch_embed", {"pixel_values": px})
                    times.append(time.perf_counter() - t0)
                rows.append({"precision": precision, "backend": backend, "batch": batch,
                             "median_ms": statistics.median(times) * 1e3,
                             "images_per_s": batch / statistics.median(times)})
    return rows


def gpu_visible(devices: str = "/dev/nvidia[0-9]*") -> str | None:
    """How this machine shows an NVIDIA GPU (nvidia-smi's list, or a device node), or None when it shows none."""
    smi = shutil.which("nvidia-smi")
    if smi:
        try:
            listed = subprocess.run([smi, "-L"], capture_output=True, text=True, timeout=30).stdout.strip()
        except (OSError, subprocess.SubprocessError):
            listed = ""
        if listed.startswith("GPU "):
            return listed.splitlines()[0]
    nodes = sorted(glob.glob(devices))
    return f"device node {nodes[0]}" if nodes else None


def require_tensorrt_where_a_gpu_is(gpu: str | None) -> None:
    """Raise when a GPU is visible but TensorRT (or a CUDA torch) is not usable: gpu-check must not pass there.

    Raises:
        EngineError: naming the GPU, what is missing, and `make gpu-setup`.
    """
    from vlfront.errors import EngineError
    from vlfront.runtime.backends.tensorrt import environment

    if gpu is None:
        return
    try:
        environment()
    except EngineError as e:
        raise EngineError(f"a GPU is visible ({gpu}) but TensorRT cannot run: {e}; run `make gpu-setup` "
                          "(pinned tensorrt-cu12 and a CUDA build of torch), then `make gpu-check`") from None


def run_gpu_check(bundle_dir, out=None, runs: int = 30, min_batch: int = 1, opt_batch: int = 8,
                  max_batch: int = 32) -> dict | None:
    """Build engines, compare and time them. Returns the results, or None when skipped (no GPU here).

    Raises:
        EngineError: a GPU is visible but TensorRT is missing, or a graph or engine was refused.
    """
    from vlfront.calibration import gate
    from vlfront.calibration.data import load_calibration_set, pixels
    from vlfront.calibration.engines import build_engines
    from vlfront.runtime.bundle import Bundle

    require_tensorrt_where_a_gpu_is(gpu_visible())

    if build_engines(bundle_dir, min_batch=min_batch, opt_batch=opt_batch, max_batch=max(max_batch, max(BATCHES))) \
            is None:
        print("gpu-check: skipped (see the line above); nothing was compared", file=sys.stderr)
        return None
    bundle = Bundle.open(bundle_dir)
    th = (bundle.manifest.get("calibration") or {}).get("thresholds", {})
    thresholds = gate.Thresholds(th.get("mean_cosine", 0.999), th.get("min_cosine", 0.99)).validate()
    held = load_calibration_set().held_out
    held_px = pixels(held, bundle.config.image_size)
    served = [p for p in ("fp32", "int8", "fp16")
              if all(p in bundle.manifest["graphs"][g] for g in ("patch_embed", "fusion"))]
    compare = [row for p in served for row in _compare(bundle_dir, p, thresholds, held, held_px)]
    timing = [row for p in served for row in _timings(bundle_dir, p, held_px, runs)]
    from vlfront.runtime.probe import verify_engines

    probe = verify_engines(bundle_dir, say=lambda text: print(text, file=sys.stderr))  # raises below the gate
    result = {"engines": bundle.manifest["engines"], "comparisons": compare, "timings": timing, "probe": probe,
              "passed": all(r["verdict"] == "pass" for r in compare)}
    print(f"{'comparison':<36} {'scope':<12} {'cos min':>10} {'cos mean':>10} {'rel L2':>10}  verdict")
    for r in compare:
        print(f"{r['precision']:<36} {r['scope']:<12} {r['cosine_min']:>10.6f} {r['cosine_mean']:>10.6f} "
              f"{r['rel_l2']:>10.3e}  {r['verdict']} {r['failures']}")
    print(f"\n{'precision':<10} {'backend':<12} {'batch':>5} {'median ms':>10} {'images/s':>10}")
    for r in timing:
        print(f"{r['precision']:<10} {r['backend']:<12} {r['batch']:>5} {r['median_ms']:>10.3f} {r['images_per_s']:>10.1f}")
    if out:
        pathlib.Path(out).parent.mkdir(parents=True, exist_ok=True)
        pathlib.Path(out).write_text(json.dumps(result, indent=2) + "\n")
    return result


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m vlfront.calibration.gpu_check", description=__doc__.split("\n")[0])
    ap.add_argument("--bundle", required=True)
    ap.add_argument("--out", default="build/gpu-check.json")
    ap.add_argument("--runs", type=int, default=30)
    a = ap.parse_args(argv)
    from vlfront.errors import VlfrontError

    try:
        result = run_gpu_check(a.bundle, a.out, a.runs)
    except VlfrontError as e:
        print(f"gpu-check: error: {e}", file=sys.stderr)
        return 2
    return 0 if result is None or result["passed"] else 1


if __name__ == "__main__":
    sys.exit(main())
