"""The shipped INT8 weights cannot saturate ONNX Runtime's non-VNNI kernel (AMD Zen 1-3, pre-VNNI Intel).

These hold on any CPU: the kernel is modelled in numpy (calibration/saturation.py),
so a VNNI machine proves the AVX2-only case too.
"""

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import numpy_helper

from vlfront.calibration import graphs, quantize, saturation
from vlfront.calibration.data import load_calibration_set, pixels
from vlfront.runtime.bundle import Bundle


def _int8_parts(root):
    model = onnx.load(str(root / "patch_embed.int8.onnx"))
    inits = {i.name: numpy_helper.to_array(i) for i in model.graph.initializer}
    w_dq = next(n for n in model.graph.node if n.op_type == "DequantizeLinear" and n.input[0] in inits)
    a_q = next(n for n in model.graph.node if n.op_type == "QuantizeLinear")
    return inits[w_dq.input[0]], inits[w_dq.input[1]], float(inits[a_q.input[1]]), inits["bias_and_positions"]


@pytest.fixture(scope="module")
def held(calibrated_bundle):
    bundle = Bundle.open(calibrated_bundle)
    return pixels(load_calibration_set().held_out, bundle.config.image_size)


def _activations(root, px):
    """The int8 activations the graph feeds its GEMM: the normalized patches quantized with the calibrated scale."""
    bundle = Bundle.open(root)
    prepared = graphs.prepare_patch_embed(graphs.load_inline(root / "patch_embed.onnx"), bundle.config)
    prepared.graph.output.append(onnx.helper.make_tensor_value_info(graphs.NORMALIZED, onnx.TensorProto.FLOAT, None))
    opts = ort.SessionOptions()
    opts.log_severity_level = 3
    sess = ort.InferenceSession(prepared.SerializeToString(), opts, providers=["CPUExecutionProvider"])
    x = sess.run([graphs.NORMALIZED], {"pixel_values": px})[0]
    _, _, a_scale, _ = _int8_parts(root)
    return np.clip(np.rint(x / a_scale), -127, 127).astype(np.int8).reshape(-1, x.shape[-1])


def test_shipped_weights_are_7_bit_so_no_pair_can_saturate(calibrated_bundle):
    w_q, _, _, _ = _int8_parts(calibrated_bundle)
    assert w_q.dtype == np.int8 and np.abs(w_q.astype(int)).max() <= quantize.WEIGHT_QMAX == 64
    assert saturation.worst_pair_sum(w_q) <= 2 * 255 * 64 == 32640 <= saturation.INT16_MAX
    assert saturation.cannot_saturate(w_q)
    section = Bundle.open(calibrated_bundle).manifest["calibration"]["quantization"]["patch_embed"]
    assert section["weight_qmax"] == 64 and "7-bit" in section["scheme"]


def test_the_non_vnni_kernel_model_is_exact_on_the_shipped_weights(calibrated_bundle, held):
    w_q, _, _, _ = _int8_parts(calibrated_bundle)
    a_q = _activations(calibrated_bundle, held[:2])
    acc, saturated = saturation.u8s8_gemm(a_q, w_q)
    assert saturated == 0
    assert np.array_equal(acc, a_q.astype(np.int64) @ w_q.astype(np.int64))


def test_the_model_does_saturate_full_range_weights(calibrated_bundle, held):
    """The AMD case: 8-bit weights (max |w| 127) on real photos hit the int16 limit."""
    w_q, w_scale, _, _ = _int8_parts(calibrated_bundle)
    weight = w_q.astype(np.float64) * w_scale
    full = np.clip(np.rint(weight / (np.abs(weight).max(axis=0) / 127)), -127, 127).astype(np.int8)
    assert not saturation.cannot_saturate(full)
    acc, saturated = saturation.u8s8_gemm(_activations(calibrated_bundle, held), full)
    assert saturated > 0
    assert not np.array_equal(acc, _activations(calibrated_bundle, held).astype(np.int64) @ full.astype(np.int64))


def test_onnxruntime_computes_the_exact_integer_products(calibrated_bundle, held):
    """The served kernel equals (a_q @ w_q) * scales + bias to float rounding, as every ISA must with 7-bit weights."""
    w_q, w_scale, a_scale, bias = _int8_parts(calibrated_bundle)
    px = held[:2]
    opts = ort.SessionOptions()
    opts.log_severity_level = 3
    sess = ort.InferenceSession(str(calibrated_bundle / "patch_embed.int8.onnx"), opts,
                                providers=["CPUExecutionProvider"])
    got = sess.run(None, {"pixel_values": px})[0].astype(np.float64)
    a_q = _activations(calibrated_bundle, px)
    want = (a_q.astype(np.int64) @ w_q.astype(np.int64)) * (a_scale * w_scale.astype(np.float64))
    want = want.reshape(got.shape) + bias.astype(np.float64)
    # float32 rounding of the scale products and of the normalization (a rare activation one step off)
    rel = np.linalg.norm(got - want) / np.linalg.norm(want)
    assert rel <= 1e-4, rel


def test_the_scheme_comparison_shows_why_7_bit(tiny_bundle):
    """`python -m vlfront.calibration.schemes`: only 8-bit weights saturate the non-VNNI kernel, and with 7-bit
    weights what that kernel computes is what this machine serves (to float rounding)."""
    from vlfront.calibration.schemes import compare

    rows = {r["scheme"]: r for r in compare(tiny_bundle, runs=5, threads=1)["rows"]}
    assert rows["8-bit weights, numpy model of the non-VNNI kernel"]["saturated_pairs"] > 0
    assert rows["7-bit weights, numpy model of the non-VNNI kernel"]["saturated_pairs"] == 0
    served, modelled = rows["7-bit weights"], rows["7-bit weights, numpy model of the non-VNNI kernel"]
    assert abs(served["cosine_min"] - modelled["cosine_min"]) <= 1e-5
    assert abs(served["rel_l2"] - modelled["rel_l2"]) <= 1e-4 * max(served["rel_l2"], 1e-3)
    assert served["batch8_vs_fp32"] > 0 and rows["8-bit weights"]["batch1_vs_fp32"] > 0  # measured, never judged here
