"""Trace the two stages to ONNX and point their weights into weights.safetensors.

Opset 17 (TensorRT 10.x parses opset 9 to 20); the traced ops are Conv, Gather,
CumSum (float32), Where, Min/Max, Equal, Reshape, Transpose, Concat and
elementwise math, written so every op gets a type TensorRT's ONNX parser
documents for it (pixels cast to float before any reshape; the image-pad count
in float32; Min/Max instead of an int64 Clip): `calibration.trt_rules` checks
each graph against that table. Weights stay as ONNX external data whose
offsets point into the safetensors data section (one copy per bundle).
"""

from __future__ import annotations

import io
import os
import pathlib
import warnings

import onnx
import torch

from vlfront.errors import ExportError
from vlfront.export.reference import FrontEnd, FusionStage, PatchEmbedStage
from vlfront.weights import read_header

OPSET = 17
WEIGHTS_FILE = "weights.safetensors"
# A Constant node above this size would be a second copy of a weight.
MAX_INLINE_CONSTANT_BYTES = 4 * 1024 * 1024


def graph_io(config) -> dict[str, dict]:
    """Inputs and outputs of each graph as the manifest records them."""
    size, tpi, d, s = config.image_size, config.tokens_per_image, config.hidden_size, config.max_seq_len
    return {
        "patch_embed": {
            "inputs": [{"name": "pixel_values", "dtype": "uint8", "shape": ["N", size, size, 3]}],
            "outputs": [{"name": "visual_tokens", "dtype": "float32", "shape": ["N", tpi, d]}],
        },
        "fusion": {
            "inputs": [
                {"name": "input_ids", "dtype": "int64", "shape": ["B", s]},
                {"name": "visual_tokens", "dtype": "float32", "shape": ["N", tpi, d]},
            ],
            "outputs": [{"name": "inputs_embeds", "dtype": "float32", "shape": ["B", s, d]}],
        },
    }


def _trace(stage: torch.nn.Module, args: tuple, io_spec: dict) -> onnx.ModelProto:
    names_in = [t["name"] for t in io_spec["inputs"]]
    names_out = [t["name"] for t in io_spec["outputs"]]
    dynamic = {t["name"]: {0: t["shape"][0]} for t in io_spec["inputs"] + io_spec["outputs"]}
    buf = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the TorchScript exporter's deprecation notice
        torch.onnx.export(
            stage.eval(), args, buf, dynamo=False, opset_version=OPSET, input_names=names_in,
            output_names=names_out, dynamic_axes=dynamic, do_constant_folding=False,
        )
    return onnx.load_from_string(buf.getvalue())


def _link_external(model: onnx.ModelProto, weights_path: pathlib.Path, name: str) -> None:
    """Replace each SPEC initializer's bytes by a reference into weights.safetensors."""
    tensors = read_header(weights_path)
    for init in model.graph.initializer:
        info = tensors.get(init.name)
        if info is None:
            raise ExportError(f"graph {name}: initializer {init.name!r} is not a SPEC weight; refusing a second copy")
        del init.external_data[:]
        init.ClearField("raw_data")
        init.ClearField("float_data")
        init.data_location = onnx.TensorProto.EXTERNAL
        for key, value in (("location", WEIGHTS_FILE), ("offset", str(info.offset)), ("length", str(info.length))):
            entry = init.external_data.add()
            entry.key, entry.value = key, value
    for node in model.graph.node:
        for attr in node.attribute:
            if attr.type == onnx.AttributeProto.TENSOR and len(attr.t.raw_data) > MAX_INLINE_CONSTANT_BYTES:
                raise ExportError(f"graph {name}: constant {node.name} holds {len(attr.t.raw_data)} bytes inline")


def export_graphs(front: FrontEnd, out_dir: pathlib.Path) -> dict[str, dict]:
    """Write patch_embed.onnx and fusion.onnx next to weights.safetensors.

    Returns:
        Manifest entries {graph: {"fp32": {"file", "opset", "inputs", "outputs"}}}.
    Raises:
        ExportError: a graph fails onnx.checker (full shape inference) or would copy weights.
    """
    cfg = front.config
    spec = graph_io(cfg)
    pixels = torch.zeros(2, cfg.image_size, cfg.image_size, 3, dtype=torch.uint8)
    ids = torch.zeros(2, cfg.max_seq_len, dtype=torch.int64)
    vis = torch.zeros(1, cfg.tokens_per_image, cfg.hidden_size)
    stages = {"patch_embed": (PatchEmbedStage(front), (pixels,)), "fusion": (FusionStage(front), (ids, vis))}
    entries = {}
    for name, (stage, args) in stages.items():
        model = _trace(stage, args, spec[name])
        model.producer_name = "vlfront"
        model.doc_string = f"vlfront {name} stage; see SPEC.md"
        _link_external(model, out_dir / WEIGHTS_FILE, name)
        path = out_dir / f"{name}.onnx"
        onnx.save(model, os.fspath(path))
        try:
            onnx.checker.check_model(os.fspath(path), full_check=True)
        except onnx.checker.ValidationError as e:
            raise ExportError(f"graph {name}: onnx.checker failed: {e}") from None
        entries[name] = {"fp32": {"file": path.name, "opset": OPSET, **spec[name]}}
    return entries
