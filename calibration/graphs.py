"""Graph rewrites behind the calibrated variants: a quantization-ready patch_embed, and FP16.

`prepare_patch_embed` rewrites the traced patch-embedding graph into the same
function (SPEC 1.5) written the way INT8 kernels want it:

    pixel_values uint8 [N,224,224,3] -> Cast float                  (first: TensorRT takes uint8 only as I/O)
      -> Reshape [N,14,16,14,16,3] -> Transpose -> Reshape [N,196,768]   (patchify, on float)
      -> Mul(scale[768]) -> Add(shift[768])                            (normalization: `pixels_normalized`)
      -> MatMul(patch_proj.weight [768,D])                             (the stride-16 convolution)
      -> Add(bias_and_positions [196,D])                               (conv bias + vis_pos, one constant)

Why: the stride-16 16x16 convolution is exactly a matrix product over
patches, and ONNX Runtime's CPU kernels run `DQ -> MatMul` (no Q on the
output) as one int8 GEMM with float output (MatMulIntegerToFloat), while a
Q/DQ `Conv` becomes QLinearConv only when its output is quantized too (one more
rounding, and slower here; see docs/calibration.md). The normalization as a
per-feature Mul/Add over the 768 patch features stays contiguous, whereas the
traced per-channel [1,3,1,1] Sub/Div ends up broadcast over a last axis of 3
once ONNX Runtime moves the graph to NHWC. The rewrite is checked against the
fp32 graph before anything is quantized.

`to_float16` converts a float graph to FP16 keeping the input and output
names and dtypes: float inputs are cast to FP16 inside the graph and float
outputs are cast back to float32, so runtimes feed and read it like fp32.
"""

from __future__ import annotations

import os
import pathlib

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from vlfront.errors import CalibrationError

PREPARED_OPSET = 17
NORMALIZED = "pixels_normalized"
PROJ_WEIGHT = "patch_proj.weight"
FP16_MAX = 65504.0


def load_inline(path: str | os.PathLike) -> onnx.ModelProto:
    """Load an ONNX graph with its external data read in, as a self-contained model."""
    path = pathlib.Path(path)
    try:
        model = onnx.load(os.fspath(path), load_external_data=True)
    except Exception as e:  # onnx raises untyped errors for unreadable files
        raise CalibrationError(f"{path}: cannot be loaded by onnx ({e}); rebuild the bundle") from None
    for tensor in model.graph.initializer:
        if tensor.data_location == TensorProto.EXTERNAL:
            del tensor.external_data[:]
            tensor.data_location = TensorProto.DEFAULT
    return model


def save(model: onnx.ModelProto, path: str | os.PathLike) -> None:
    """Write a self-contained graph (deterministic bytes: same proto, same file) and check it fully."""
    path = pathlib.Path(path)
    path.write_bytes(model.SerializeToString())
    try:
        onnx.checker.check_model(os.fspath(path), full_check=True)
    except onnx.checker.ValidationError as e:
        raise CalibrationError(f"{path.name}: onnx.checker failed: {e}") from None


def _constant(model: onnx.ModelProto, name: str) -> np.ndarray | None:
    for init in model.graph.initializer:
        if init.name == name:
            return numpy_helper.to_array(init)
    for node in model.graph.node:
        if node.op_type == "Constant" and node.output[0] == name:
            return numpy_helper.to_array(node.attribute[0].t)
    return None


def patch_embed_parts(model: onnx.ModelProto) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(conv weight [D,3,P,P], conv bias [D], positions [T,D]) out of the traced patch_embed graph.

    Raises:
        CalibrationError: the graph does not end in Conv ... Add(positions) as vlfront exports it.
    """
    conv = [n for n in model.graph.node if n.op_type == "Conv"]
    final = [n for n in model.graph.node if n.output[0] == "visual_tokens"]
    if len(conv) != 1 or len(conv[0].input) != 3 or len(final) != 1 or final[0].op_type != "Add":
        raise CalibrationError("patch_embed.onnx: expected one Conv with bias and a final Add of the positions "
                               "(the graph vlfront export writes); re-export the bundle")
    weight, bias = _constant(model, conv[0].input[1]), _constant(model, conv[0].input[2])
    pos = next((c for c in (_constant(model, i) for i in final[0].input) if c is not None), None)
    if weight is None or bias is None or pos is None:
        raise CalibrationError("patch_embed.onnx: the Conv weight/bias or the position table is not a constant")
    return weight, bias, pos


def prepare_patch_embed(model: onnx.ModelProto, config) -> onnx.ModelProto:
    """The quantization-ready float graph described in the module docstring (float64 folding, float32 result)."""
    weight, bias, pos = patch_embed_parts(model)
    d, p, g = config.hidden_size, config.patch_size, config.grid
    feats = p * p * 3
    if weight.shape != (d, 3, p, p) or pos.shape != (g * g, d):
        raise CalibrationError(f"patch_embed.onnx: weight {weight.shape} / positions {pos.shape} do not match "
                               f"hidden_size={d}, patch_size={p}")
    mean, std = np.asarray(config.image_mean, np.float64), np.asarray(config.image_std, np.float64)
    # Patch features are ordered (row in patch, column in patch, channel): the channel is the fastest axis.
    scale = np.tile(1.0 / (255.0 * std), p * p).astype(np.float32)
    shift = np.tile(-mean / std, p * p).astype(np.float32)
    proj = weight.transpose(2, 3, 1, 0).reshape(feats, d)
    consts = {
        "patchify_shape": np.array([0, g, p, g, p, 3], np.int64),
        "patches_shape": np.array([0, g * g, feats], np.int64),
        "normalize_scale": scale, "normalize_shift": shift, PROJ_WEIGHT: proj.astype(np.float32),
        "bias_and_positions": (pos.astype(np.float64) + bias.astype(np.float64)).astype(np.float32),
    }
    nodes = [  # cast before any reshape: TensorRT's parser refuses uint8 intermediates (docs/calibration.md)
        helper.make_node("Cast", ["pixel_values"], ["pixels_float"], name="normalize/cast", to=TensorProto.FLOAT),
        helper.make_node("Reshape", ["pixels_float", "patchify_shape"], ["patch_grid"], name="patchify/reshape"),
        helper.make_node("Transpose", ["patch_grid"], ["patch_grid_t"], name="patchify/transpose",
                         perm=[0, 1, 3, 2, 4, 5]),
        helper.make_node("Reshape", ["patch_grid_t", "patches_shape"], ["patches_float"], name="patchify/flatten"),
        helper.make_node("Mul", ["patches_float", "normalize_scale"], ["patches_scaled"], name="normalize/mul"),
        helper.make_node("Add", ["patches_scaled", "normalize_shift"], [NORMALIZED], name="normalize/add"),
        helper.make_node("MatMul", [NORMALIZED, PROJ_WEIGHT], ["patch_proj"], name="patch_proj/matmul"),
        helper.make_node("Add", ["patch_proj", "bias_and_positions"], ["visual_tokens"], name="bias_positions/add"),
    ]
    size = config.image_size
    graph = helper.make_graph(
        nodes, "patch_embed",
        [helper.make_tensor_value_info("pixel_values", TensorProto.UINT8, ["N", size, size, 3])],
        [helper.make_tensor_value_info("visual_tokens", TensorProto.FLOAT, ["N", g * g, d])],
        [numpy_helper.from_array(v, k) for k, v in consts.items()])
    out = helper.make_model(graph, opset_imports=[helper.make_opsetid("", PREPARED_OPSET)],
                            producer_name="vlfront", doc_string="vlfront patch_embed, quantization-ready rewrite")
    out.ir_version = model.ir_version
    onnx.checker.check_model(out, full_check=True)
    return out


def _to_fp16(array: np.ndarray) -> np.ndarray:
    return np.clip(array, -FP16_MAX, FP16_MAX).astype(np.float16)


def _convert_tensor(t: TensorProto) -> None:
    if t.data_type == TensorProto.FLOAT:
        t.CopyFrom(numpy_helper.from_array(_to_fp16(numpy_helper.to_array(t)), t.name))


def to_float16(model: onnx.ModelProto, doc: str = "") -> onnx.ModelProto:
    """FP16 copy of a float graph with float32 graph inputs/outputs kept (Cast at the edges).

    Every float initializer and constant becomes FP16 (values beyond ±65504 clamp), every Cast to float
    casts to FP16 instead, except a Cast feeding CumSum: that count stays float32 (fp16 counts are exact
    only to 2048). Integer parts (ids, shapes, indices) are untouched.
    """
    out = onnx.ModelProto()
    out.CopyFrom(model)
    g = out.graph
    del g.value_info[:]
    counts = {n.input[0] for n in g.node if n.op_type == "CumSum"}
    for init in g.initializer:
        _convert_tensor(init)
    for node in g.node:
        for attr in node.attribute:
            if attr.type == onnx.AttributeProto.TENSOR:
                _convert_tensor(attr.t)
            if node.op_type == "Cast" and attr.name == "to" and attr.i == TensorProto.FLOAT \
                    and node.output[0] not in counts:
                attr.i = TensorProto.FLOAT16
    head, tail = [], []
    for inp in g.input:
        if inp.type.tensor_type.elem_type == TensorProto.FLOAT:
            inner = inp.name + "_fp16"
            for node in g.node:
                node.input[:] = [inner if i == inp.name else i for i in node.input]
            head.append(helper.make_node("Cast", [inp.name], [inner], name=f"{inp.name}/to_fp16",
                                         to=TensorProto.FLOAT16))
    for outp in g.output:
        if outp.type.tensor_type.elem_type == TensorProto.FLOAT:
            inner = outp.name + "_fp16"
            for node in g.node:
                node.output[:] = [inner if o == outp.name else o for o in node.output]
                node.input[:] = [inner if i == outp.name else i for i in node.input]
            tail.append(helper.make_node("Cast", [inner], [outp.name], name=f"{outp.name}/to_fp32",
                                         to=TensorProto.FLOAT))
    nodes = head + list(g.node) + tail
    del g.node[:]
    g.node.extend(nodes)
    out.doc_string = doc or (model.doc_string + " (FP16)")
    return out
