"""TensorRT's ONNX parser rules, checked on the CPU: `check_model`, `check_bundle`, `require_parsable`.

The rules are data (`trt_rules.json`, one table per pinned TensorRT version,
each row citing the line of onnx-tensorrt's docs/operators.md it comes from;
docs/calibration.md lists them). A graph passes when:

- op: every node's op is in the table (an op the table lacks is refused: either
  the parser lacks it or nobody reviewed it for this version);
- dtype: the tensors each op reads (and, for Cast/Constant, writes) have a type the
  table lists for that op; Gather indices are INT32/INT64;
- uint8: UINT8 appears only as a network input or output;
- int8: INT8 appears only between Q and DQ (a Q output, a DQ input, a weight
  initializer feeding DQ, a zero point);
- qdq: Q/DQ zero points are constant zeros; per-axis scales only on a DQ of a
  constant weight;
- constant: inputs the table says must be build-time constants (CumSum axis,
  Unsqueeze axes, ...) are initializers or Constant outputs;
- opset and network types within the table's range;
- profile: an optimisation profile (calibration/engines.py `profiles`) names the
  graph's inputs with their rank and static dimensions, and min >= 0.

This is what the parser documents, not the parser: a clean report does not
prove that TensorRT builds the engine (docs/calibration.md, "unverified").
"""

from __future__ import annotations

import dataclasses
import json
import os
import pathlib

import numpy as np
import onnx
from onnx import TensorProto, numpy_helper

from vlfront.errors import EngineError

RULES_FILE = pathlib.Path(__file__).with_name("trt_rules.json")
_TYPE_NAMES = {v: k for k, v in TensorProto.DataType.items()}


@dataclasses.dataclass(frozen=True)
class Violation:
    """One broken rule: which graph, which node or tensor, which rule, why, and the rule's source."""

    graph: str
    where: str
    rule: str
    message: str
    source: str

    def __str__(self) -> str:
        return f"{self.graph}: {self.where}: [{self.rule}] {self.message} (source: {self.source})"


def load_rules(path: str | os.PathLike = RULES_FILE) -> dict:
    """The rules table. Raises EngineError when it is missing or not JSON."""
    try:
        return json.loads(pathlib.Path(path).read_text())
    except (OSError, ValueError) as e:
        raise EngineError(f"{path}: cannot read the TensorRT parser rules ({e}); reinstall vlfront") from None


def _dtypes(model: onnx.ModelProto) -> dict[str, str]:
    """Element type name of every tensor the graph names (inputs, initializers, Constant outputs, inferred)."""
    try:
        inferred = onnx.shape_inference.infer_shapes(model, strict_mode=False)
    except Exception:  # onnx raises untyped errors; fall back to what the graph declares
        inferred = model
    g = inferred.graph
    out = {}
    for vi in list(g.input) + list(g.value_info) + list(g.output):
        if vi.type.HasField("tensor_type") and vi.type.tensor_type.elem_type:
            out[vi.name] = _TYPE_NAMES[vi.type.tensor_type.elem_type]
    for init in g.initializer:
        out[init.name] = _TYPE_NAMES[init.data_type]
    for node in g.node:
        if node.op_type == "Constant":
            for attr in node.attribute:
                if attr.type == onnx.AttributeProto.TENSOR:
                    out[node.output[0]] = _TYPE_NAMES[attr.t.data_type]
    return out


def _constants(model: onnx.ModelProto) -> dict[str, TensorProto]:
    g = model.graph
    out = {i.name: i for i in g.initializer}
    for node in g.node:
        if node.op_type == "Constant":
            for attr in node.attribute:
                if attr.type == onnx.AttributeProto.TENSOR:
                    out[node.output[0]] = attr.t
    return out


def _array(tensor: TensorProto) -> np.ndarray | None:
    if tensor.data_location == TensorProto.EXTERNAL:
        return None  # a weight in weights.safetensors: never a zero point or scale here
    return numpy_helper.to_array(tensor)


def check_model(model: onnx.ModelProto, name: str, rules: dict | None = None,
                profile: dict | None = None) -> list[Violation]:
    """Every violation of the rules table in one graph (empty: clean). Never raises on a bad graph."""
    rules = rules or load_rules()
    ops, src = rules["ops"], rules["sources"]["ops"]
    dtypes, consts = _dtypes(model), _constants(model)
    g = model.graph
    io = {t.name for t in g.input} | {t.name for t in g.output}
    found: list[Violation] = []

    def bad(where, rule, message, source):
        found.append(Violation(name, where, rule, message, source))

    opset = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), None)
    if opset is None or not rules["opset"]["min"] <= opset <= rules["opset"]["max"]:
        bad("model", "opset", f"opset {opset} is outside {rules['opset']['min']}..{rules['opset']['max']}",
            rules["sources"][rules["opset"]["source"]])
    allowed = set(rules["network_types"]["types"])
    for tensor, kind in sorted(dtypes.items()):
        if kind not in allowed:
            bad(tensor, "network-type", f"tensor type {kind} is not one TensorRT takes ({sorted(allowed)})",
                rules["sources"][rules["network_types"]["source"]])
        if kind in rules["io_only_types"]["types"] and tensor not in io:
            bad(tensor, "uint8", f"{kind} tensor {tensor!r} is an intermediate; {kind} is only allowed as a network "
                "input or output: cast to float first", rules["sources"][rules["io_only_types"]["source"]])
    q_out = {n.output[0] for n in g.node if n.op_type == "QuantizeLinear"}
    for i, node in enumerate(g.node):
        where = f"node {node.name or i} ({node.op_type})"
        if node.domain not in ("", "ai.onnx") or node.op_type not in ops:
            bad(where, "op", f"op {node.domain + '.' if node.domain else ''}{node.op_type} is not in the table for "
                f"TensorRT {rules['tensorrt']}", src)
            continue
        row = ops[node.op_type]
        line = f"{src}, line {row['line']}"
        checked = row.get("inputs", range(len(node.input)))
        names = [node.input[k] for k in checked if k < len(node.input) and node.input[k]]
        if row.get("outputs"):
            names += list(node.output)
        for tensor in names:
            kind = dtypes.get(tensor)
            if kind is not None and kind not in row["types"]:
                bad(where, "dtype", f"{node.op_type} on {kind} tensor {tensor!r}: the parser takes {row['types']}", line)
        for k in row.get("index_inputs", []):
            kind = dtypes.get(node.input[k]) if k < len(node.input) else None
            if kind is not None and kind not in rules["index_types"]:
                bad(where, "dtype", f"{node.op_type} indices {node.input[k]!r} are {kind}: need {rules['index_types']}",
                    line)
        for k in row.get("constant_inputs", []):
            if k < len(node.input) and node.input[k] and node.input[k] not in consts:
                bad(where, "constant", f"input {k} ({node.input[k]!r}) must be a build-time constant", line)
        for tensor in list(node.input) + list(node.output):
            if dtypes.get(tensor) not in rules["quantized_types"]["types"]:
                continue
            ok = (node.op_type == "DequantizeLinear" and tensor in node.input[:1] and (tensor in q_out or tensor in consts)) \
                or (node.op_type == "QuantizeLinear" and tensor in node.output) \
                or (node.op_type in ("QuantizeLinear", "DequantizeLinear") and tensor in node.input[2:3])
            if not ok:
                bad(where, "int8", f"INT8 tensor {tensor!r} outside a Q/DQ pair", rules["sources"]["ops-quantized"])
        if node.op_type in ("QuantizeLinear", "DequantizeLinear"):
            _check_qdq(node, where, consts, bad, rules)
    if profile is not None:
        _check_profile(model, name, profile, bad)
    return found


def _check_qdq(node, where, consts, bad, rules) -> None:
    source = rules["sources"]["qdq-guide"]
    zp = consts.get(node.input[2]) if len(node.input) > 2 and node.input[2] else None
    if zp is None:
        bad(where, "qdq", "no constant zero point (without one Q writes UINT8, not INT8)", source)
    else:
        arr = _array(zp)
        if arr is None or np.any(arr != rules["qdq"]["zero_point"]):
            bad(where, "qdq", f"zero point {node.input[2]!r} is not all {rules['qdq']['zero_point']}: TensorRT needs "
                "symmetric quantization", source)
    scale = consts.get(node.input[1]) if len(node.input) > 1 else None
    if scale is None:
        bad(where, "qdq", f"scale {node.input[1] if len(node.input) > 1 else ''!r} is not a constant", source)
        return
    per_axis = int(np.prod(scale.dims)) > 1 if scale.dims else False
    weight = node.op_type == "DequantizeLinear" and node.input[0] in consts
    if per_axis and not weight:
        bad(where, "qdq", "per-axis scale on an activation: per-axis quantization only on constant weights (DQ)",
            source)


def _check_profile(model, name, profile, bad) -> None:
    source = "TensorRT optimisation profiles: one min/opt/max shape per dynamic network input"
    inputs = {t.name: [d.dim_value if d.HasField("dim_value") else None for d in t.type.tensor_type.shape.dim]
              for t in model.graph.input}
    for tensor, dims in inputs.items():
        if tensor not in profile and any(d is None for d in dims):
            bad(tensor, "profile", f"dynamic input {tensor!r} has no optimisation profile", source)
    for tensor, shapes in profile.items():
        if tensor not in inputs:
            bad(tensor, "profile", f"the profile names {tensor!r}, which is not an input of {name}", source)
            continue
        want = inputs[tensor]
        for key in ("min", "opt", "max"):
            got = shapes[key]
            if len(got) != len(want) or any(w is not None and g != w for g, w in zip(got, want)) \
                    or any(g < 0 for g in got):
                bad(tensor, "profile", f"profile {key} shape {got} does not fit the input's shape "
                    f"{['N' if w is None else w for w in want]}", source)


def check_bundle(bundle_dir, shapes: dict | None = None, rules: dict | None = None) -> dict[str, list[Violation]]:
    """{onnx file: violations} for every graph the bundle serves on TensorRT (engines.served_files).

    Args:
        shapes: {graph: profile} as `engines.profiles` makes them; checked against each graph's inputs.
    """
    from vlfront.calibration.engines import served_files
    from vlfront.runtime.bundle import Bundle

    bundle = Bundle.open(bundle_dir)
    rules = rules or load_rules()
    report = {}
    for onnx_file, (graph, _precision) in served_files(bundle.manifest).items():
        model = onnx.load(os.fspath(bundle.path(onnx_file)), load_external_data=False)
        report[onnx_file] = check_model(model, onnx_file, rules, (shapes or {}).get(graph))
    return report


def require_parsable(bundle_dir, shapes: dict | None = None) -> dict[str, list[Violation]]:
    """`check_bundle`, raising EngineError listing every violation when any graph breaks a rule."""
    report = check_bundle(bundle_dir, shapes)
    broken = [str(v) for vs in report.values() for v in vs]
    if broken:
        raise EngineError(f"{bundle_dir}: {len(broken)} TensorRT parser rule violation(s); re-export/recalibrate with "
                          "this vlfront version:\n  " + "\n  ".join(broken))
    return report
