"""ONNX Runtime backend (CPU, or CUDA when onnxruntime-gpu and a GPU are present).

Session options, chosen deliberately:
- intra-op threads = `threads` (default: all cores); inter-op 1 with sequential
  execution: each graph is a straight chain, parallel branches gain nothing.
- graph optimisation ORT_ENABLE_ALL: constant folding and Conv+Add fusions.
- memory arena on: batches of the same size reuse their buffers instead of
  paging memory in again; the arena grows only to the largest batch served.
- spinning off: idle ORT threads sleep instead of spinning, so the image-decode
  threads and a server's own threads keep their cores (measured on 2 busy cores:
  spinning made batch-8 fusion up to 3x slower).
- log severity error: warnings about unused initializers are noise here.
- constant folding stays on: it folds `position_embed + modality_embed[0]` once.
  The fusion graph gathers the `<|image_pad|>` row with an index ORT cannot fold,
  so the 467 MB token table stays memory-mapped (export/reference.py says why).
"""

from __future__ import annotations

import os

import numpy as np
import onnxruntime as ort

from vlfront.errors import BundleError
from vlfront.runtime import manifest_schema
from vlfront.runtime.backends.base import GRAPHS, Runner


def _providers(device: str) -> list[str]:
    available = ort.get_available_providers()
    if device in ("auto", "cuda") and "CUDAExecutionProvider" in available:
        return ["CUDAExecutionProvider", "CPUExecutionProvider"]
    if device == "cuda":
        raise BundleError("device 'cuda' asked for, but onnxruntime has no CUDAExecutionProvider here; "
                          "install vlfront[gpu] (onnxruntime-gpu) on a machine with a CUDA GPU")
    return ["CPUExecutionProvider"]


def _session_options(threads: int) -> ort.SessionOptions:
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    opts.enable_cpu_mem_arena = True
    opts.log_severity_level = 3
    opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return opts


class OnnxRuntimeRunner(Runner):
    name = "onnxruntime"

    def _load_impl(self) -> None:
        threads = int(self.options.get("threads") or os.cpu_count() or 1)
        providers = _providers(self.options.get("device", "auto"))
        opts = _session_options(threads)
        self.sessions = {}
        for graph in GRAPHS:
            path = self.graph_path(graph)
            try:
                self.sessions[graph] = ort.InferenceSession(os.fspath(path), opts, providers=providers)
            except Exception as e:  # ORT raises its own untyped errors
                raise BundleError(f"{path}: ONNX Runtime cannot load graph {graph}: {e}; rebuild the bundle") from None
            manifest_schema.check_graph_io(graph, self.precision, self.io[graph], *manifest_schema.ort_io(
                self.sessions[graph]), str(self.bundle.root))  # the graph is what the manifest says
        self.output_names = {g: [o["name"] for o in self.io[g]["outputs"]] for g in GRAPHS}

    def _infer_impl(self, graph: str, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        names = self.output_names[graph]
        return dict(zip(names, self.sessions[graph].run(names, feeds)))

    def _close_impl(self) -> None:
        self.sessions = {}
