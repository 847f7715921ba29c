"""INT8 Q/DQ and FP16 graphs: structure (zero points, per-channel scales), ORT's int8 path, I/O contract."""

import hashlib

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import numpy_helper

from vlfront.calibration import graphs, quantize
from vlfront.calibration.data import load_calibration_set, pixels
from vlfront.calibration.gate import Thresholds
from vlfront.config import preset
from vlfront.errors import CalibrationError

CFG = preset("tiny")


@pytest.fixture(scope="module")
def photos():
    s = load_calibration_set()
    return pixels(s.calibration[:6]), pixels(s.held_out[:4])


@pytest.fixture(scope="module")
def prepared(tiny_bundle):
    return graphs.prepare_patch_embed(graphs.load_inline(tiny_bundle / "patch_embed.onnx"), CFG)


def _run(model_or_path, px, optimized=None, level=ort.GraphOptimizationLevel.ORT_ENABLE_ALL):
    opts = ort.SessionOptions()
    opts.log_severity_level = 3
    opts.graph_optimization_level = level
    if optimized:
        opts.optimized_model_filepath = str(optimized)
    src = model_or_path.SerializeToString() if isinstance(model_or_path, onnx.ModelProto) else str(model_or_path)
    return ort.InferenceSession(src, opts, providers=["CPUExecutionProvider"]).run(None, {"pixel_values": px})[0]


def _cosines(a, b):
    a, b = a.reshape(-1, a.shape[-1]).astype(np.float64), b.reshape(-1, b.shape[-1]).astype(np.float64)
    return (a * b).sum(1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))


def test_rewrite_reproduces_the_fp32_graph(tiny_bundle, prepared, photos):
    px = photos[1]
    want = _run(tiny_bundle / "patch_embed.onnx", px)
    got = _run(prepared, px)
    assert np.abs(got - want).max() <= 1e-5 * np.abs(want).max()


def test_int8_graph_is_symmetric_qdq_with_per_channel_weights(tmp_path, prepared, photos):
    out = tmp_path / "pe.int8.onnx"
    info = quantize.quantize_patch_embed(prepared, photos[0], out, "minmax")
    model = onnx.load(str(out))
    inits = {i.name: numpy_helper.to_array(i) for i in model.graph.initializer}
    assert not any(i.data_location == onnx.TensorProto.EXTERNAL for i in model.graph.initializer)
    qdq = [n for n in model.graph.node if n.op_type in ("QuantizeLinear", "DequantizeLinear")]
    assert qdq, "no Q/DQ nodes"
    for node in qdq:
        zp = inits[node.input[2]]
        assert zp.dtype == np.int8 and not zp.any(), f"{node.name}: zero point {zp}"
    weight_dq = [n for n in qdq if n.input[0] == "patch_proj.weight_quantized"]
    assert len(weight_dq) == 1
    axis = {a.name: a.i for a in weight_dq[0].attribute}.get("axis")
    assert axis == 1
    assert inits["patch_proj.weight_quantized"].dtype == np.int8
    assert inits["patch_proj.weight_quantized"].shape == (768, CFG.hidden_size)
    scales = inits[weight_dq[0].input[1]]
    assert scales.shape == (CFG.hidden_size,) and np.unique(scales).size > 1
    # The activation scale is the calibrated range of the normalized pixels over 127 (minmax, symmetric).
    px_norm = (photos[0].astype(np.float64) / 255 - np.array(CFG.image_mean)) / np.array(CFG.image_std)
    assert info["scales"]["pixels_normalized"]["scale_max"] == pytest.approx(np.abs(px_norm).max() / 127, rel=1e-5)
    assert info["scales"]["patch_proj.weight"] == {**info["scales"]["patch_proj.weight"], "per_channel": True, "axis": 1}
    # Inputs and outputs are those of fp32.
    assert [(i.name, i.type.tensor_type.elem_type) for i in model.graph.input] == [("pixel_values", onnx.TensorProto.UINT8)]
    assert [(o.name, o.type.tensor_type.elem_type) for o in model.graph.output] == [("visual_tokens", onnx.TensorProto.FLOAT)]


def test_onnxruntime_runs_the_int8_gemm_path(tmp_path, tiny_bundle, prepared, photos):
    out = tmp_path / "pe.int8.onnx"
    quantize.quantize_patch_embed(prepared, photos[0], out, "minmax")
    opt = tmp_path / "optimized.onnx"
    got = _run(out, photos[1], optimized=opt)
    ops = [n.op_type for n in onnx.load(str(opt)).graph.node]
    # One int8 GEMM with float output; no float MatMul or Conv left, no Q/DQ around the weights.
    assert "MatMulIntegerToFloat" in ops, ops
    assert "MatMul" not in ops and "Conv" not in ops and "DequantizeLinear" not in ops, ops
    want = _run(tiny_bundle / "patch_embed.onnx", photos[1])
    cos = _cosines(got, want)
    gate = Thresholds()  # the default gate calibration ships behind, not figures one CPU gave
    assert cos.min() >= gate.min_cosine and cos.mean() >= gate.mean_cosine
    # With 7-bit weights the fused kernel's integer products are exact on every ISA, so it matches the graph's
    # Q/DQ semantics (DequantizeLinear + float MatMul, no fusion) to float32 rounding; a kernel whose int16
    # pair sums saturate (x86 without VNNI, 8-bit weights) was 2e-2 away from them.
    semantics = _run(out, photos[1], level=ort.GraphOptimizationLevel.ORT_DISABLE_ALL)
    assert np.linalg.norm(got - semantics) / np.linalg.norm(semantics) <= 1e-4


@pytest.mark.parametrize("method", ["entropy", "percentile"])
def test_other_methods_produce_valid_graphs(tmp_path, prepared, photos, method):
    out = tmp_path / f"pe.{method}.onnx"
    info = quantize.quantize_patch_embed(prepared, photos[0], out, method)
    assert info["method"] == method
    quantize.check_qdq(onnx.load(str(out)))
    assert np.isfinite(_run(out, photos[1])).all()


def test_quantization_is_byte_reproducible(tmp_path, prepared, photos):
    digests = []
    for name in ("a.onnx", "b.onnx"):
        quantize.quantize_patch_embed(prepared, photos[0], tmp_path / name, "minmax")
        digests.append(hashlib.sha256((tmp_path / name).read_bytes()).hexdigest())
    assert digests[0] == digests[1]


def test_bad_method_and_no_images_are_refused(tmp_path, prepared, photos):
    with pytest.raises(CalibrationError, match="method='kl'"):
        quantize.quantize_patch_embed(prepared, photos[0], tmp_path / "x.onnx", "kl")
    with pytest.raises(CalibrationError, match="no calibration images"):
        quantize.quantize_patch_embed(prepared, photos[0][:0], tmp_path / "x.onnx")


def test_check_qdq_refuses_a_nonzero_zero_point(tmp_path, prepared, photos):
    out = tmp_path / "pe.int8.onnx"
    quantize.quantize_patch_embed(prepared, photos[0], out)
    model = onnx.load(str(out))
    for init in model.graph.initializer:
        if init.name.endswith("zero_point") and "pixels_normalized" in init.name:
            init.CopyFrom(numpy_helper.from_array(np.array(3, np.int8), init.name))
    with pytest.raises(CalibrationError, match="zero point is not 0"):
        quantize.check_qdq(model)


def test_fp16_graphs_keep_fp32_io_and_stay_close(tmp_path, tiny_bundle, prepared, photos):
    for name, model in (("patch_embed", prepared), ("fusion", graphs.load_inline(tiny_bundle / "fusion.onnx"))):
        half = graphs.to_float16(model)
        path = tmp_path / f"{name}.fp16.onnx"
        graphs.save(half, path)
        io = lambda m: [(v.name, v.type.tensor_type.elem_type) for v in (*m.graph.input, *m.graph.output)]  # noqa: E731
        assert io(half) == io(model)
        floats = [i for i in half.graph.initializer if i.data_type == onnx.TensorProto.FLOAT]
        assert not floats, [i.name for i in floats]
    got = _run(tmp_path / "patch_embed.fp16.onnx", photos[1])
    want = _run(tiny_bundle / "patch_embed.onnx", photos[1])
    assert got.dtype == np.float32 and _cosines(got, want).min() > 0.9999


def test_unexpected_patch_embed_structure_is_refused(tiny_bundle):
    model = graphs.load_inline(tiny_bundle / "fusion.onnx")
    with pytest.raises(CalibrationError, match="expected one Conv"):
        graphs.prepare_patch_embed(model, CFG)


def test_check_qdq_refuses_weights_outside_the_7_bit_range(tmp_path, prepared, photos):
    out = tmp_path / "pe.int8.onnx"
    quantize.quantize_patch_embed(prepared, photos[0], out)
    model = onnx.load(str(out))
    for init in model.graph.initializer:
        if init.name == "patch_proj.weight_quantized":
            w = numpy_helper.to_array(init).copy()
            assert np.abs(w.astype(int)).max() == quantize.WEIGHT_QMAX  # per-channel scales use the whole range
            w[0, 0] = 100
            init.CopyFrom(numpy_helper.from_array(w, init.name))
    with pytest.raises(CalibrationError, match=r"weights reach 100, outside \[-64, 64\].*without VNNI"):
        quantize.check_qdq(model)
