"""Runtime: serve a bundle. Imports neither torch nor onnx.

    from vlfront.runtime import Runtime
    rt = Runtime.load("build/default")
    out = rt.embed([request])

The public names load lazily, so `vlfront.runtime.bundle` stays cheap to import.
"""

from vlfront.errors import BundleError, ImageError, QueueFullError, RequestError, VlfrontError

__all__ = ["Runtime", "EmbedOutput", "Processor", "Batcher", "VlfrontError", "BundleError", "RequestError",
           "ImageError", "QueueFullError"]


def __getattr__(name: str):
    if name in ("Runtime", "EmbedOutput"):
        from vlfront.runtime import runtime

        return getattr(runtime, name)
    if name == "Processor":  # the transformers-style call over Runtime (not runtime.processor's layout class)
        from vlfront.runtime.hf_processor import Processor

        return Processor
    if name == "Batcher":
        from vlfront.runtime.batcher import Batcher

        return Batcher
    raise AttributeError(f"module 'vlfront.runtime' has no attribute {name!r}")
