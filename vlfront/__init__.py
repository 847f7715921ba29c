"""vlfront: export, calibrate and serve the front-end of a Qwen-VL-style model.

The stages are subpackages: `vlfront.export` (PyTorch -> ONNX bundle),
`vlfront.calibration` (INT8/FP16 behind an accuracy gate) and
`vlfront.runtime` (bundle -> `inputs_embeds`).
"""

from vlfront.errors import VlfrontError

__version__ = "0.1.0"
__all__ = ["VlfrontError", "__version__"]
