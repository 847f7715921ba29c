"""The INT8 weight schemes compared on this machine: the measurement behind 7-bit weights (docs/calibration.md).

    python -m vlfront.calibration.schemes --bundle build/default [--runs 35] [--threads 2]

For 8-bit ([-127, 127]) and 7-bit ([-64, 64], shipped) weights, on the bundle's
fp32 patch_embed and the default held-out photos: figures against fp32 as ONNX
Runtime serves the graph, with `session.x64quantprecision=1`, unfused
(`ORT_DISABLE_ALL`, the Q/DQ semantics), and as the numpy model of the non-VNNI
kernel computes it (calibration/saturation.py: what an AVX2-only CPU serves);
then batch 1 and batch 8 medians, interleaved, as ratios to fp32.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time

import numpy as np
import onnx
from onnx import numpy_helper


def _session(src, threads: int, precise: bool = False, unfused: bool = False):
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.log_severity_level = 3
    opts.intra_op_num_threads = threads
    opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
    if unfused:
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    if precise:
        opts.add_session_config_entry("session.x64quantprecision", "1")
    return ort.InferenceSession(src, opts, providers=["CPUExecutionProvider"])


def _quantize(prepared, calib_px, path, qmax: int) -> None:
    import onnxruntime.quantization as oq

    from vlfront.calibration import quantize

    real, saved = oq.quantize_static, quantize.WEIGHT_QMAX

    def with_range(*args, **kwargs):
        return real(*args, **{**kwargs, "reduce_range": qmax == 64})

    oq.quantize_static, quantize.WEIGHT_QMAX = with_range, qmax
    try:
        quantize.quantize_patch_embed(prepared, calib_px, path)
    finally:
        oq.quantize_static, quantize.WEIGHT_QMAX = real, saved


def _modelled(path, normalized: np.ndarray, shape) -> tuple[np.ndarray, int]:
    """visual_tokens as the non-VNNI kernel computes them, and how many pair sums saturated."""
    from vlfront.calibration.saturation import u8s8_gemm

    model = onnx.load(os.fspath(path))
    inits = {i.name: numpy_helper.to_array(i) for i in model.graph.initializer}
    w_dq = next(n for n in model.graph.node if n.op_type == "DequantizeLinear" and n.input[0] in inits)
    a_scale = float(inits[next(n for n in model.graph.node if n.op_type == "QuantizeLinear").input[1]])
    a_q = np.clip(np.rint(normalized / a_scale), -127, 127).astype(np.int8).reshape(-1, normalized.shape[-1])
    acc, saturated = u8s8_gemm(a_q, inits[w_dq.input[0]])
    out = acc * (a_scale * inits[w_dq.input[1]].astype(np.float64))
    return out.reshape(shape) + inits["bias_and_positions"].astype(np.float64), saturated


def compare(bundle_dir, runs: int = 35, threads: int = 2) -> dict:
    """Figures and speed ratios per scheme (see the module docstring)."""
    from vlfront.calibration import graphs
    from vlfront.calibration.data import load_calibration_set, pixels
    from vlfront.runtime.bundle import Bundle
    from vlfront.runtime.probe import figures

    bundle = Bundle.open(bundle_dir)
    fp32_path = bundle.path(bundle.graph("patch_embed", "fp32")["file"])
    for rel in bundle.graph("patch_embed", "fp32").get("external_data", []):
        bundle.path(rel)
    prepared = graphs.prepare_patch_embed(graphs.load_inline(fp32_path), bundle.config)
    cset = load_calibration_set()
    calib, held = pixels(cset.calibration, bundle.config.image_size), pixels(cset.held_out, bundle.config.image_size)
    probe = onnx.ModelProto()
    probe.CopyFrom(prepared)
    probe.graph.output.append(onnx.helper.make_tensor_value_info(graphs.NORMALIZED, onnx.TensorProto.FLOAT, None))
    ref, normalized = _session(probe.SerializeToString(), threads).run(None, {"pixel_values": held})
    rows, sessions = [], {"fp32": _session(os.fspath(fp32_path), threads)}
    with tempfile.TemporaryDirectory() as tmp:
        for qmax in (127, 64):
            path = os.path.join(tmp, f"w{qmax}.onnx")
            _quantize(prepared, calib, path, qmax)
            name = f"{'8' if qmax == 127 else '7'}-bit weights"
            variants = {name: _session(path, threads), f"{name} + x64quantprecision": _session(path, threads, True),
                        f"{name}, unfused Q/DQ": _session(path, threads, unfused=True)}
            for label, sess in variants.items():
                rows.append({"scheme": label, **figures(sess.run(None, {"pixel_values": held})[0], ref)})
            sessions.update({k: v for k, v in variants.items() if "unfused" not in k})
            out, saturated = _modelled(path, normalized, ref.shape)
            rows.append({"scheme": f"{name}, numpy model of the non-VNNI kernel", **figures(out, ref),
                         "saturated_pairs": saturated})
    speed = {}
    for batch in (1, 8):
        px = np.ascontiguousarray(np.resize(held, (batch, *held.shape[1:])))
        times = {k: [] for k in sessions}
        for sess in sessions.values():
            sess.run(None, {"pixel_values": px})
        for _ in range(max(1, runs // 5)):
            for k, sess in sessions.items():
                for _ in range(5):
                    t0 = time.perf_counter()
                    sess.run(None, {"pixel_values": px})
                    times[k].append(time.perf_counter() - t0)
        base = statistics.median(times["fp32"])
        speed[batch] = {k: base / statistics.median(v) for k, v in times.items()}
    for r in rows:
        for batch in (1, 8):
            r[f"batch{batch}_vs_fp32"] = speed[batch].get(r["scheme"], float("nan"))
    return {"rows": rows}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m vlfront.calibration.schemes", description=__doc__.split("\n")[0])
    ap.add_argument("--bundle", required=True)
    ap.add_argument("--runs", type=int, default=35)
    ap.add_argument("--threads", type=int, default=2)
    a = ap.parse_args(argv)
    result = compare(a.bundle, a.runs, a.threads)
    print(f"{'scheme':<52} {'cos min':>9} {'cos mean':>10} {'rel L2':>9} {'b1 vs fp32':>10} {'b8 vs fp32':>10}")
    for r in result["rows"]:
        sat = f"  saturated pairs {r['saturated_pairs']}" if "saturated_pairs" in r else ""
        ratios = " ".join(f"{r[k]:>9.2f}x" if r[k] == r[k] else f"{'-':>10}" for k in ("batch1_vs_fp32", "batch8_vs_fp32"))
        print(f"{r['scheme']:<52} {r['cosine_min']:>9.6f} {r['cosine_mean']:>10.7f} {r['rel_l2']:>9.3e} {ratios}{sat}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
