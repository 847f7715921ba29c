"""TensorRT parser rules on the CPU: the shipped graphs obey the table, and the table catches each kind of break.

Also: the rewrites that made the graphs parsable (cast before patchify, the image-pad count in float32,
Min/Max instead of an int64 Clip) give the same numbers as before.
"""

import json
import pathlib
import re

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from vlfront.calibration.engines import profiles
from vlfront.calibration.trt_rules import RULES_FILE, check_bundle, check_model, load_rules, require_parsable
from vlfront.config import IMAGE_PAD_ID
from vlfront.errors import EngineError
from vlfront.runtime.bundle import Bundle

REPO = pathlib.Path(__file__).resolve().parents[2]
RULES = load_rules()


def _rules_of(model, **kw):
    return sorted({v.rule for v in check_model(model, "g", RULES, **kw)})


def _model(nodes, inputs, outputs, inits=(), opset=17):
    graph = helper.make_graph(nodes, "g", inputs, outputs, list(inits))
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])


def _vi(name, kind, shape):
    return helper.make_tensor_value_info(name, kind, shape)


def test_every_graph_the_bundle_serves_obeys_the_rules(calibrated_bundle):
    shapes = profiles(Bundle.open(calibrated_bundle).config, 1, 8, 32)
    report = check_bundle(calibrated_bundle, shapes)
    assert sorted(report) == ["fusion.fp16.onnx", "fusion.onnx", "patch_embed.fp16.onnx", "patch_embed.int8.onnx",
                              "patch_embed.onnx"]
    assert {f: [str(v) for v in vs] for f, vs in report.items()} == {f: [] for f in report}
    assert require_parsable(calibrated_bundle, shapes) == report


def test_uint8_under_a_transpose_is_refused_twice():
    """The traced patch_embed before this fix: Transpose on the uint8 input, then Cast."""
    m = _model([helper.make_node("Transpose", ["px"], ["t"], perm=[0, 3, 1, 2]),
                helper.make_node("Cast", ["t"], ["y"], to=TensorProto.FLOAT)],
               [_vi("px", TensorProto.UINT8, ["N", 4, 4, 3])], [_vi("y", TensorProto.FLOAT, ["N", 3, 4, 4])])
    found = check_model(m, "patch_embed.onnx", RULES)
    assert sorted(v.rule for v in found) == ["dtype", "uint8"]
    assert any("Transpose on UINT8 tensor 'px'" in str(v) and "line 208" in str(v) for v in found)
    assert any("'t' is an intermediate" in str(v) and "line 13" in str(v) for v in found)
    fixed = _model([helper.make_node("Cast", ["px"], ["f"], to=TensorProto.FLOAT),
                    helper.make_node("Transpose", ["f"], ["y"], perm=[0, 3, 1, 2])],
                   [_vi("px", TensorProto.UINT8, ["N", 4, 4, 3])], [_vi("y", TensorProto.FLOAT, ["N", 3, 4, 4])])
    assert check_model(fixed, "patch_embed.onnx", RULES) == []


@pytest.mark.parametrize("op, kind, line", [("CumSum", TensorProto.INT64, 57), ("Clip", TensorProto.INT64, 46)])
def test_int64_cumsum_and_clip_are_refused(op, kind, line):
    axis = numpy_helper.from_array(np.array(0, np.int64), "axis")
    inputs = ["x", "axis"] if op == "CumSum" else ["x", "", "hi"]
    inits = [axis] if op == "CumSum" else [numpy_helper.from_array(np.array(5, np.int64), "hi")]
    m = _model([helper.make_node(op, inputs, ["y"])], [_vi("x", kind, [8])], [_vi("y", kind, [8])], inits)
    found = check_model(m, "fusion.onnx", RULES)
    assert found and {v.rule for v in found} == {"dtype"} and all(f"line {line}" in str(v) for v in found)


def test_cumsum_axis_must_be_constant_and_unknown_ops_are_refused():
    m = _model([helper.make_node("CumSum", ["x", "axis"], ["y"])],
               [_vi("x", TensorProto.FLOAT, [8]), _vi("axis", TensorProto.INT64, [])], [_vi("y", TensorProto.FLOAT, [8])])
    assert _rules_of(m) == ["constant"]
    m = _model([helper.make_node("Unique", ["x"], ["y"])], [_vi("x", TensorProto.FLOAT, [8])],
               [_vi("y", TensorProto.FLOAT, [None])])
    assert _rules_of(m) == ["op"]
    m = _model([helper.make_node("Identity", ["x"], ["y"])], [_vi("x", TensorProto.FLOAT, [8])],
               [_vi("y", TensorProto.FLOAT, [8])], opset=21)
    assert _rules_of(m) == ["opset"]


def _qdq(zero_point, scale, weight=False, dq_input_int8=True):
    """x -> Q -> DQ -> y, or (weight) a constant int8 tensor -> DQ -> y."""
    inits = [numpy_helper.from_array(np.asarray(scale, np.float32), "s"),
             numpy_helper.from_array(np.asarray(zero_point, np.int8), "z")]
    if weight:
        inits.append(numpy_helper.from_array(np.ones((2, 3), np.int8), "w"))
        nodes = [helper.make_node("DequantizeLinear", ["w", "s", "z"], ["y"], axis=1)]
        return _model(nodes, [], [_vi("y", TensorProto.FLOAT, [2, 3])], inits)
    nodes = [helper.make_node("QuantizeLinear", ["x", "s", "z"], ["q"], axis=1),
             helper.make_node("DequantizeLinear", ["q", "s", "z"], ["y"], axis=1)]
    return _model(nodes, [_vi("x", TensorProto.FLOAT, [2, 3])], [_vi("y", TensorProto.FLOAT, [2, 3])], inits)


def test_qdq_must_be_symmetric_with_per_axis_scales_only_on_weights():
    assert _rules_of(_qdq(0, 0.1)) == []
    assert _rules_of(_qdq(np.zeros(3), np.full(3, 0.1), weight=True)) == []
    assert _rules_of(_qdq(3, 0.1)) == ["qdq"]  # asymmetric
    assert _rules_of(_qdq(np.zeros(3), np.full(3, 0.1))) == ["qdq"]  # per-axis on an activation


def test_int8_outside_qdq_is_refused():
    m = _model([helper.make_node("Cast", ["x"], ["i"], to=TensorProto.INT8),
                helper.make_node("Cast", ["i"], ["y"], to=TensorProto.FLOAT)],
               [_vi("x", TensorProto.FLOAT, [4])], [_vi("y", TensorProto.FLOAT, [4])])
    assert "int8" in _rules_of(m)


def test_profile_must_fit_the_graph_inputs():
    m = _model([helper.make_node("Identity", ["x"], ["y"])], [_vi("x", TensorProto.FLOAT, ["N", 224, 224, 3])],
               [_vi("y", TensorProto.FLOAT, ["N", 224, 224, 3])])
    good = {"x": {"min": [1, 224, 224, 3], "opt": [8, 224, 224, 3], "max": [32, 224, 224, 3]}}
    assert _rules_of(m, profile=good) == []
    assert _rules_of(m, profile={"x": {**good["x"], "max": [32, 112, 224, 3]}}) == ["profile"]
    assert _rules_of(m, profile={}) == ["profile"]  # a dynamic input without a profile
    assert _rules_of(m, profile={**good, "z": good["x"]}) == ["profile"]


def test_require_parsable_names_every_violation(calibrated_bundle, tmp_path):
    import shutil

    root = tmp_path / "b"
    shutil.copytree(calibrated_bundle, root)
    manifest = json.loads((root / "manifest.json").read_text())
    # Swap in an int64-CumSum fusion graph, listed with its real sha256 (a graph an older vlfront exported).
    path = root / "fusion.onnx"
    model = onnx.load(path, load_external_data=False)
    for node in model.graph.node:
        if node.op_type == "Cast" and node.output[0] in {n.input[0] for n in model.graph.node if n.op_type == "CumSum"}:
            next(a for a in node.attribute if a.name == "to").i = TensorProto.INT64
    path.write_bytes(model.SerializeToString())
    import hashlib

    manifest["files"]["fusion.onnx"]["sha256"] = hashlib.sha256(path.read_bytes()).hexdigest()
    manifest["files"]["fusion.onnx"]["size"] = path.stat().st_size
    from vlfront.calibration.manifest import write_manifest

    write_manifest(root, manifest)
    with pytest.raises(EngineError, match=r"(?s)1 TensorRT parser rule violation.*CumSum on INT64.*line 57"):
        require_parsable(root)


def test_docs_cite_every_rule_of_the_table():
    """docs/calibration.md lists each op row with its source line, so the table and the docs cannot drift."""
    docs = (REPO / "docs" / "calibration.md").read_text()
    rules = json.loads(RULES_FILE.read_text())
    assert f"TensorRT {rules['tensorrt']}" in docs
    for op, row in rules["ops"].items():
        assert re.search(rf"\|\s*{op}\s*\|[^\n]*\|\s*{row['line']}\s*\|", docs), f"{op} (line {row['line']}) not in docs"
    for rule in ("op", "dtype", "uint8", "int8", "qdq", "constant", "opset", "network-type", "profile"):
        assert f"`{rule}`" in docs, rule


# --- the rewrites give the same numbers ---------------------------------------------------------------------


def _session(model):
    opts = ort.SessionOptions()
    opts.log_severity_level = 3
    return ort.InferenceSession(model.SerializeToString(), opts, providers=["CPUExecutionProvider"])


def _uint8_first(model):
    """The pre-fix form of a patch_embed graph: Reshape/Transpose on uint8, then Cast (to compare against)."""
    old = onnx.ModelProto()
    old.CopyFrom(model)
    del old.graph.value_info[:]  # the types change: let shape inference find them again
    nodes = list(old.graph.node)
    cast = next(n for n in nodes if n.op_type == "Cast" and n.input[0] == "pixel_values")
    chain, tensor = [], cast.output[0]
    while True:
        users = [n for n in nodes if tensor in n.input]
        if len(users) != 1 or users[0].op_type not in ("Reshape", "Transpose") or users[0].input[0] != tensor:
            break
        chain.append(users[0])
        tensor = users[0].output[0]
    assert chain, "no Reshape/Transpose after the Cast"
    chain[0].input[0] = "pixel_values"
    out = chain[-1].output[0]
    chain[-1].output[0], cast.input[0], cast.output[0] = "pixels_u8_patchified", "pixels_u8_patchified", out
    order = [n for n in nodes if n is not cast]
    order.insert(order.index(chain[-1]) + 1, cast)
    del old.graph.node[:]
    old.graph.node.extend(order)
    return old


@pytest.mark.parametrize("variant", ["patch_embed.onnx", "patch_embed.int8.onnx", "patch_embed.fp16.onnx"])
def test_cast_before_patchify_is_bit_identical(calibrated_bundle, variant):
    model = onnx.load(calibrated_bundle / variant)  # external data (weights.safetensors) read in
    old = _uint8_first(model)
    assert "uint8" in {v.rule for v in check_model(old, variant, RULES)}
    rng = np.random.default_rng(0)
    px = rng.integers(0, 256, size=(3, 224, 224, 3), dtype=np.uint8)
    new_out = _session(model).run(None, {"pixel_values": px})[0]
    old_out = _session(old).run(None, {"pixel_values": px})[0]
    np.testing.assert_array_equal(new_out, old_out)


def _fusion_batch(rows_images, seq=1024, tpi=196):
    ids = np.full((len(rows_images), seq), 100, np.int64)
    for b, n in enumerate(rows_images):
        for k in range(n):
            start = 2 + k * (tpi + 2)
            ids[b, start:start + tpi] = IMAGE_PAD_ID
    ids[:, -1] = 7
    return ids


def _fusion_reference(root, ids, visual):
    """SPEC 1.6 as the fused graph computes it (int64 count), in float32 numpy: the same adds in the same order."""
    from safetensors.numpy import load_file

    w = load_file(str(root / "weights.safetensors"))
    tok, pos, mod = w["token_embed.weight"], w["position_embed.weight"], w["modality_embed.weight"]
    seq, d = ids.shape[1], tok.shape[1]
    flags = (ids == IMAGE_PAD_ID).reshape(-1).astype(np.int64)
    number = (np.cumsum(flags) - flags).reshape(ids.shape)
    table = np.concatenate([pos + mod[0], visual.reshape(-1, d) + (mod[1] - tok[IMAGE_PAD_ID])])
    index = np.where(ids == IMAGE_PAD_ID, np.minimum(number + seq, len(table) - 1), np.arange(seq))
    return tok[np.clip(ids, 0, len(tok) - 1)] + table[index]


def test_fusion_with_a_float32_count_matches_the_int64_count_exactly(calibrated_bundle):
    ids = _fusion_batch([5, 0, 5, 3])  # 13 images, 2548 pads: past fp16's exact 2048
    visual = np.random.default_rng(1).standard_normal((13, 196, 64)).astype(np.float32)
    model = onnx.load(calibrated_bundle / "fusion.onnx")
    got = _session(model).run(None, {"input_ids": ids, "visual_tokens": visual})[0]
    np.testing.assert_array_equal(got, _fusion_reference(calibrated_bundle, ids, visual))
    # A malformed batch (more pads than images) still reads inside the tables: the Min clamps.
    short = _session(model).run(None, {"input_ids": ids, "visual_tokens": visual[:2]})[0]
    assert np.isfinite(short).all()


def test_fp16_fusion_keeps_the_count_float32(calibrated_bundle):
    model = onnx.load(calibrated_bundle / "fusion.fp16.onnx")
    counted = {n.input[0] for n in model.graph.node if n.op_type == "CumSum"}
    casts = [n for n in model.graph.node if n.op_type == "Cast" and n.output[0] in counted]
    assert len(casts) == 1 and casts[0].attribute[0].i == TensorProto.FLOAT
    ids = _fusion_batch([5, 5, 5])  # 2940 pads
    visual = np.random.default_rng(2).standard_normal((15, 196, 64)).astype(np.float32)
    got = _session(model).run(None, {"input_ids": ids, "visual_tokens": visual})[0].astype(np.float64)
    ref = _fusion_reference(calibrated_bundle, ids, visual).astype(np.float64)
    cos = (got * ref).sum(-1) / (np.linalg.norm(got, axis=-1) * np.linalg.norm(ref, axis=-1))
    assert cos.min() > 0.999  # a miscounted pad would take another image's row: cosine near 0


def test_rules_table_is_for_the_pinned_tensorrt():
    """The table describes the TensorRT that `pip install vlfront[gpu]` installs (a new pin is a new table)."""
    from vlfront.runtime.backends.tensorrt import PINNED_TENSORRT

    pyproject = (REPO / "pyproject.toml").read_text()
    makefile = (REPO / "Makefile").read_text()
    assert PINNED_TENSORRT.startswith(RULES["tensorrt"] + ".")
    assert f'"tensorrt-cu12=={PINNED_TENSORRT}"' in pyproject
    assert f"TENSORRT_PIN   := tensorrt-cu12=={PINNED_TENSORRT}\n" in makefile
