"""Bundle edits for refusal tests, shared by tests/calibration and tests/cpp (importable: pytest puts
tests/ on sys.path for tests/conftest.py)."""

from __future__ import annotations

import hashlib
import json

import numpy as np
import onnx
from onnx import numpy_helper


def resign(root, rel):
    """List `rel`'s new size and sha256 in the manifest, as someone re-signing a tampered bundle would."""
    manifest = json.loads((root / "manifest.json").read_text())
    data = (root / rel).read_bytes()
    manifest["files"][rel] = {"sha256": hashlib.sha256(data).hexdigest(), "size": len(data)}
    (root / "manifest.json").write_text(json.dumps(manifest, indent=2, sort_keys=True))


def degrade_int8(root, factor=8.0):
    """Multiply the weight scale of the int8 patch projection by `factor` (every channel) and re-sign."""
    path = root / "patch_embed.int8.onnx"
    model = onnx.load(str(path))
    dq = next(n for n in model.graph.node if n.op_type == "DequantizeLinear" and n.input[0].endswith("weight_quantized"))
    for init in model.graph.initializer:
        if init.name == dq.input[1]:
            init.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(init) * np.float32(factor), init.name))
    path.write_bytes(model.SerializeToString())
    resign(root, "patch_embed.int8.onnx")
