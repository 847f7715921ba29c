"""Export: PyTorch reference -> ONNX graphs -> validated bundle."""

from vlfront.export.pipeline import export_bundle

__all__ = ["export_bundle"]
