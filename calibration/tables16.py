"""FP16 of the fusion graph: the embedding tables stored in FP16, the arithmetic in float32.

Why not `graphs.to_float16` (FP16 everywhere) for fusion: ONNX Runtime's CPU
provider has no FP16 kernel for some of fusion's ops, inserts casts around them,
and hoists the cast of a gathered table above its Gather onto the table itself,
so every call converted the whole 151,936 x 768 token table to float32
(profiled as `InsertedPrecisionFreeCast_token_embed.weight`: about 200-300 ms a
call on 2 cores, against 1.4 ms for fp32). Here every float table is an FP16
initializer; a Gather reads FP16 rows and casts just those rows to float32; a
table used whole (the position table, added to every row) is cast once, which
ONNX Runtime folds at load. The tables take half the memory, as FP16 should,
the graph's inputs and outputs keep their fp32 names and dtypes, and the only
rounding is that of the stored tables.
"""

from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from vlfront.calibration.graphs import FP16_MAX

SUFFIX = "_fp16"


def tables_to_float16(model: onnx.ModelProto, doc: str = "") -> onnx.ModelProto:
    """A copy of `model` whose float initializers are FP16 and are read as described in the module docstring."""
    out = onnx.ModelProto()
    out.CopyFrom(model)
    g = out.graph
    tables = {i.name for i in g.initializer if i.data_type == TensorProto.FLOAT}
    for init in g.initializer:
        if init.name in tables:
            half = np.clip(numpy_helper.to_array(init), -FP16_MAX, FP16_MAX).astype(np.float16)
            init.CopyFrom(numpy_helper.from_array(half, init.name + SUFFIX))
    whole, nodes = set(), []
    for node in g.node:
        if node.op_type == "Gather" and node.input[0] in tables:
            rows = node.output[0]
            node.input[0] += SUFFIX
            node.output[0] = rows + SUFFIX
            nodes += [node, helper.make_node("Cast", [rows + SUFFIX], [rows], name=f"{rows}/to_fp32", to=TensorProto.FLOAT)]
        else:
            whole.update(name for name in node.input if name in tables)
            nodes.append(node)
    head = [helper.make_node("Cast", [name + SUFFIX], [name], name=f"{name}/to_fp32", to=TensorProto.FLOAT)
            for name in sorted(whole)]
    del g.node[:]
    g.node.extend(head + nodes)
    del g.value_info[:]
    out.doc_string = doc or (model.doc_string + " (FP16 tables)")
    return out
