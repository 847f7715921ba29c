"""The runner interface every backend implements (Polygraphy-style).

The base owns the public `load / infer / close` and the state and input
checks; a backend fills in `_load_impl`, `_infer_impl` and `_close_impl`.
"""

from __future__ import annotations

import numpy as np

from vlfront.errors import BundleError, VlfrontError
from vlfront.runtime.bundle import Bundle

GRAPHS = ("patch_embed", "fusion")
_DTYPES = {"uint8": np.uint8, "int64": np.int64, "float32": np.float32, "float16": np.float16}


class Runner:
    """Serves the two graphs of one bundle at one precision."""

    name = "base"

    def __init__(self, bundle: Bundle, precision: str = "fp32", **options):
        self.bundle = bundle
        self.precision = precision
        self.options = options
        self.io = {g: bundle.graph(g, precision) for g in GRAPHS}
        self.loaded = False

    # --- public -------------------------------------------------------------
    def load(self) -> "Runner":
        if not self.loaded:
            self._load_impl()
            self.loaded = True
        return self

    def infer(self, graph: str, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Run one graph. Inputs are checked against the manifest's names, dtypes and shapes."""
        if not self.loaded:
            raise VlfrontError(f"{self.name} runner: call load() before infer()")
        if graph not in GRAPHS:
            raise VlfrontError(f"{self.name} runner: unknown graph {graph!r}; choose one of {GRAPHS}")
        spec = self.io[graph]["inputs"]
        if set(feeds) != {t["name"] for t in spec}:
            raise VlfrontError(f"graph {graph}: inputs {sorted(feeds)} != expected {[t['name'] for t in spec]}")
        for t in spec:
            arr = feeds[t["name"]]
            if arr.dtype != _DTYPES[t["dtype"]]:
                raise VlfrontError(f"graph {graph}: input {t['name']} is {arr.dtype}, expected {t['dtype']}")
            if arr.ndim != len(t["shape"]) or any(
                isinstance(want, int) and got != want for got, want in zip(arr.shape, t["shape"])
            ):
                raise VlfrontError(f"graph {graph}: input {t['name']} has shape {list(arr.shape)}, expected {t['shape']}")
        return self._infer_impl(graph, feeds)

    def close(self) -> None:
        if self.loaded:
            self._close_impl()
            self.loaded = False

    def __enter__(self) -> "Runner":
        return self.load()

    def __exit__(self, *exc) -> None:
        self.close()

    # --- for backends -------------------------------------------------------
    def graph_path(self, graph: str):
        """The verified ONNX file of `graph` and the external-data files it points at (Bundle.graph_path)."""
        return self.bundle.graph_path(graph, self.precision)

    def _load_impl(self) -> None:
        raise NotImplementedError

    def _infer_impl(self, graph: str, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        raise NotImplementedError

    def _close_impl(self) -> None:
        pass


def available_backends() -> dict[str, type]:
    from vlfront.runtime.backends.onnxruntime import OnnxRuntimeRunner

    out = {"onnxruntime": OnnxRuntimeRunner}
    try:
        from vlfront.runtime.backends.tensorrt import TensorRTRunner

        out["tensorrt"] = TensorRTRunner
    except ImportError:
        pass
    return out


def select_backend(bundle: Bundle, backend: str, precision: str, **options) -> Runner:
    """`auto`: TensorRT when the bundle has engines for this precision and TensorRT + a GPU are present, else ORT."""
    backends = available_backends()
    if backend == "auto":
        trt = backends.get("tensorrt")
        if trt is not None and trt.usable(bundle, precision):
            return trt(bundle, precision, **options)
        backend = "onnxruntime"
    if backend not in backends:
        raise BundleError(f"backend {backend!r} is not available here; choose one of {sorted(backends)} or 'auto'")
    return backends[backend](bundle, precision, **options)
