"""INT8 Q/DQ of the patch-embedding graph with ONNX Runtime's static quantization.

One calibrated Q/DQ graph serves ONNX Runtime on the CPU and TensorRT (strongly
typed networks take INT8 only as explicit Q/DQ):

* activations and weights int8 and symmetric, so every zero point is 0 (what
  TensorRT requires); weights per output channel (axis 1 of the [768, D]
  patch projection), activations per tensor;
* weights in the 7-bit range [-64, 64] (`WEIGHT_QMAX`; ONNX Runtime's
  `reduce_range`), activations in the full [-127, 127]. This is what makes the
  served figures the same on every CPU: without VNNI, ONNX Runtime's x86 int8
  GEMM adds 128 to the activations and multiplies u8 x s8 byte pairs with
  VPMADDUBSW, whose int16 pair sums saturate once 2 * 255 * |w| > 32767.
  With |w| <= 64 the worst pair is 2 * 255 * 64 = 32640, so every kernel (AVX2,
  AVX-512, VNNI, AMX, ARM64) computes the same exact integer products and only
  float rounding differs. ONNX Runtime itself treats such weights as safe: its
  `session.x64quantprecision` transformer leaves s8 weights inside [-64, 64]
  alone (onnxruntime/core/optimizer/qdq_transformer/s8_to_u8.cc). Measured
  choice in docs/calibration.md; the model of the kernel is `saturation.py`;
* quantized: `pixels_normalized` (the MatMul input, range from the calibration
  images by the chosen method) and `patch_proj.weight`;
* kept in float, deliberately (recorded in the manifest, `FLOAT_TENSORS`): the
  uint8 -> float normalization (cheap, and it is where the input range is set),
  the MatMul output (no Q after a weighted op: ONNX Runtime then runs one int8
  GEMM with float output, and TensorRT's Q/DQ guidance says the same), and the
  Add of bias + positions and the output, which feed the fusion stage and the
  language model in float.
"""

from __future__ import annotations

import contextlib
import io
import logging
import os
import pathlib

import numpy as np
import onnx
from onnx import numpy_helper
from onnxruntime.quantization import CalibrationDataReader

from vlfront.calibration.graphs import NORMALIZED, PROJ_WEIGHT
from vlfront.errors import CalibrationError

METHODS = ("minmax", "entropy", "percentile")
# One image a call: the histogram calibrators (entropy, percentile) stack per-call outputs and need equal shapes.
BATCH = 1
WEIGHT_QMAX = 64
SCHEME = ("int8 Q/DQ, symmetric (zero points 0): activations per tensor in [-127, 127], weights per output "
          f"channel in the 7-bit range [-{WEIGHT_QMAX}, {WEIGHT_QMAX}] so that no CPU kernel's int16 pair sums "
          "can saturate (2*255*64 = 32640 <= 32767): the same integer products on AVX2, AVX-512, VNNI, AMX and "
          "ARM64; no session option needed (session.x64quantprecision leaves such weights as they are)")
FLOAT_TENSORS = {
    "patches_float / patches_scaled": "uint8 -> float cast and the per-feature scale of the normalization",
    "patch_proj": "MatMul output: int8 GEMM with float output, no requantization",
    "bias_and_positions / visual_tokens": "conv bias + vis_pos added in float; the output stays float32",
}


class PixelReader(CalibrationDataReader):
    """A CalibrationDataReader over uint8 [n, H, W, 3] pixels, BATCH images a call."""

    def __init__(self, pixels: np.ndarray):
        self.batches = [pixels[i:i + BATCH] for i in range(0, len(pixels), BATCH)]
        self.index = 0

    def get_next(self) -> dict | None:
        if self.index >= len(self.batches):
            return None
        self.index += 1
        return {"pixel_values": self.batches[self.index - 1]}

    def rewind(self) -> None:
        self.index = 0


@contextlib.contextmanager
def _quiet_quantizer():
    """onnxruntime.quantization warns through the root logger and prints progress: hide both, keep errors."""
    previous = logging.root.manager.disable
    logging.disable(logging.WARNING)
    try:
        with contextlib.redirect_stdout(io.StringIO()):
            yield
    finally:
        logging.disable(previous)


def quantize_patch_embed(prepared: onnx.ModelProto, pixels: np.ndarray, out: str | os.PathLike,
                         method: str = "minmax") -> dict:
    """Write the INT8 Q/DQ patch_embed to `out` (weights inline, int8). Returns what the manifest records.

    Args:
        prepared: `graphs.prepare_patch_embed(...)` (float, self-contained).
        pixels: calibration images, uint8 [n, 224, 224, 3].
        method: "minmax", "entropy" or "percentile" (99.999th) for the activation range.
    Raises:
        CalibrationError: unknown method, no images, or a result that breaks the Q/DQ contract
            (a non-zero zero point, missing per-channel weight scales).
    """
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static

    if method not in METHODS:
        raise CalibrationError(f"method={method!r}: choose one of {METHODS}")
    if len(pixels) == 0:
        raise CalibrationError("no calibration images")
    out = pathlib.Path(out)
    calibrate_method = {"minmax": CalibrationMethod.MinMax, "entropy": CalibrationMethod.Entropy,
                        "percentile": CalibrationMethod.Percentile}[method]
    copy = onnx.ModelProto()
    copy.CopyFrom(prepared)  # quantize_static may rewrite a ModelProto it is given
    with _quiet_quantizer():
        quantize_static(
            copy, os.fspath(out), PixelReader(pixels), quant_format=QuantFormat.QDQ, op_types_to_quantize=["MatMul"],
            per_channel=True, reduce_range=True,  # 7-bit weights: see the module docstring
            activation_type=QuantType.QInt8, weight_type=QuantType.QInt8,
            calibrate_method=calibrate_method,
            extra_options={"ActivationSymmetric": True, "WeightSymmetric": True,
                           "OpTypesToExcludeOutputQuantization": ["MatMul"],
                           "QDQOpTypePerChannelSupportToAxis": {"MatMul": 1}, "CalibPercentile": 99.999})
    model = onnx.load(os.fspath(out))
    model.producer_name = "vlfront"
    model.doc_string = f"vlfront patch_embed, INT8 Q/DQ ({method} calibration over {len(pixels)} images)"
    info = check_qdq(model)
    out.write_bytes(model.SerializeToString())
    return {"format": "QDQ", "tool": "onnxruntime.quantization.quantize_static", "method": method,
            "activations": "int8, symmetric, per tensor (zero point 0)",
            "weights": f"int8 in [-{WEIGHT_QMAX}, {WEIGHT_QMAX}] (7-bit range), symmetric, per output channel "
                       "(axis 1 of the [768, D] patch projection)",
            "scheme": SCHEME, "weight_qmax": WEIGHT_QMAX,
            "quantized": sorted(info), "scales": info, "float": FLOAT_TENSORS,
            "rewrite": "stride-16 conv as patchify (uint8 cast to float, then Reshape/Transpose) + MatMul; "
                       "normalization as per-feature Mul/Add; conv bias folded into the positions"}


def check_qdq(model: onnx.ModelProto) -> dict:
    """Check the Q/DQ contract and return the scales per quantized tensor.

    Raises:
        CalibrationError: a non-zero zero point, a weight without per-channel scales or outside the 7-bit
            range, or a missing Q/DQ.
    """
    inits = {i.name: i for i in model.graph.initializer}
    found = {}
    for node in model.graph.node:
        if node.op_type not in ("QuantizeLinear", "DequantizeLinear") or len(node.input) < 3:
            continue
        zp = numpy_helper.to_array(inits[node.input[2]]) if node.input[2] in inits else None
        if node.op_type == "DequantizeLinear" and node.input[0] in inits:
            q = numpy_helper.to_array(inits[node.input[0]])
            if q.size and int(np.abs(q.astype(np.int32)).max()) > WEIGHT_QMAX:
                raise CalibrationError(f"{node.name}: weights reach {int(np.abs(q.astype(np.int32)).max())}, outside "
                                       f"[-{WEIGHT_QMAX}, {WEIGHT_QMAX}]: int16 pair sums could saturate on CPUs "
                                       "without VNNI")
        if zp is None or np.any(zp != 0):
            raise CalibrationError(f"{node.name}: zero point is not 0 (TensorRT needs symmetric int8)")
        scale = numpy_helper.to_array(inits[node.input[1]])
        axis = next((a.i for a in node.attribute if a.name == "axis"), None)
        if node.op_type == "DequantizeLinear" and node.input[0] not in inits:
            continue  # the DQ half of an activation's Q/DQ pair: recorded at its Q
        tensor = node.input[0].removesuffix("_quantized")
        found[tensor] = {"per_channel": scale.size > 1, "axis": axis if scale.size > 1 else None,
                         "scale_min": float(scale.min()), "scale_max": float(scale.max()),
                         "dtype": zp.dtype.name}
    if NORMALIZED not in found or PROJ_WEIGHT not in found:
        raise CalibrationError(f"INT8 patch_embed: expected Q/DQ on {NORMALIZED} and {PROJ_WEIGHT}, found {sorted(found)}")
    if not found[PROJ_WEIGHT]["per_channel"] or found[PROJ_WEIGHT]["axis"] != 1:
        raise CalibrationError(f"INT8 patch_embed: {PROJ_WEIGHT} is not quantized per output channel (axis 1)")
    return found
