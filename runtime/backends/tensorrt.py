"""TensorRT backend: serves a bundle's engines (engines/*.plan) on a CUDA GPU.

Written against the TensorRT 10.x Python API (tensor-name I/O:
`set_input_shape`, `set_tensor_address`, `execute_async_v3`), pinned to
tensorrt-cu12 10.13.3.9. Device memory comes from torch.cuda. Both imports are
guarded: without them `usable()` says False and `load()` raises an EngineError
saying what to install. Running an engine (a pool of execution contexts, one
per concurrent caller; batches split to the profile; every TensorRT call's
result checked) lives in trt_exec.py, testable on the CPU with fakes.

Engine metadata (manifest `engines[<onnx stem>]`, see docs/calibration.md) is
validated here, once, by pure functions over dicts: an engine built by another
TensorRT version, for another GPU, or from another ONNX file than the one the
manifest lists now, is refused with the command that rebuilds it. Engines are
not portable across TensorRT versions or GPU models, so all three must match
exactly.

NOT VERIFIED on a GPU in this repository's CI: see `make gpu-check`.
"""

from __future__ import annotations

import re

import numpy as np

from vlfront.errors import EngineError, VlfrontError
from vlfront.runtime.backends.base import GRAPHS, Runner

ENGINE_DIR = "engines"
REBUILD = "rebuild the engines on this machine with `vlfront engines --bundle {root}`"
_SHA256 = re.compile(r"^[0-9a-f]{64}$")
PINNED_TENSORRT = "10.13.3.9"  # pyproject.toml [gpu]; calibration/trt_rules.json is this version's parser table
_LOGGER = None
_REQUIRED = {"file": str, "graph": str, "precision": str, "onnx": str, "onnx_sha256": str, "tensorrt": str,
             "gpu": str, "compute_capability": str, "profile": dict, "strongly_typed": bool}


def engine_key(onnx_file: str) -> str:
    """The engines-section key (and plan name) of an ONNX file: its name without `.onnx`."""
    return onnx_file[:-5] if onnx_file.endswith(".onnx") else onnx_file


def plan_path(onnx_file: str) -> str:
    return f"{ENGINE_DIR}/{engine_key(onnx_file)}.plan"


def timing_cache_path(env: dict) -> str:
    """The bundle-relative timing cache of one TensorRT version on one GPU model (caches do not carry over)."""
    gpu = re.sub(r"[^A-Za-z0-9.]+", "-", env["gpu"]).strip("-").lower() or "gpu"
    version = re.sub(r"[^0-9A-Za-z.]+", "-", env["tensorrt"])
    return f"{ENGINE_DIR}/timing-{version}-{gpu}-sm{env['compute_capability'].replace('.', '')}.cache"


def validate_entry(key: str, entry, root="DIR") -> dict:
    """Check one `engines` entry's shape (keys, types, profile). Returns it.

    Raises:
        EngineError: naming the entry and the bad or missing field.
    """
    fix = REBUILD.format(root=root)
    if not isinstance(entry, dict):
        raise EngineError(f"manifest engines[{key!r}] is not an object; {fix}")
    for name, kind in _REQUIRED.items():
        if not isinstance(entry.get(name), kind):
            raise EngineError(f"manifest engines[{key!r}]: field {name!r} is missing or not a {kind.__name__}; {fix}")
    if not _SHA256.match(entry["onnx_sha256"]):
        raise EngineError(f"manifest engines[{key!r}]: onnx_sha256 is not a sha256 hex digest; {fix}")
    if entry["graph"] not in GRAPHS:
        raise EngineError(f"manifest engines[{key!r}]: unknown graph {entry['graph']!r}; {fix}")
    for name, dims in entry["profile"].items():
        shapes = [dims.get(k) if isinstance(dims, dict) else None for k in ("min", "opt", "max")]
        if not all(isinstance(s, list) and s and all(isinstance(d, int) and d >= 0 for d in s) for s in shapes) \
                or len({len(s) for s in shapes}) != 1 \
                or not all(a <= b <= c for a, b, c in zip(*shapes)):
            raise EngineError(f"manifest engines[{key!r}]: profile of {name!r} must hold min <= opt <= max shapes of "
                              f"one rank, got {dims}; {fix}")
    return entry


def find_engine(manifest: dict, graph: str, precision: str, root="DIR") -> dict:
    """The validated engine entry serving `graph` at `precision` (the engine of that variant's ONNX file).

    Raises:
        EngineError: no such variant or engine (says how to build it), or a malformed entry.
    """
    variant = manifest.get("graphs", {}).get(graph, {}).get(precision)
    if not isinstance(variant, dict) or not isinstance(variant.get("file"), str):
        raise EngineError(f"{root}: graph {graph} has no {precision} variant to run on TensorRT; "
                          "run `vlfront calibrate` first")
    key = engine_key(variant["file"])
    entry = (manifest.get("engines") or {}).get(key)
    if entry is None:
        raise EngineError(f"{root}: no TensorRT engine for {variant['file']}; build it on this machine with "
                          f"`vlfront engines --bundle {root}`")
    validate_entry(key, entry, root)
    if entry["onnx"] != variant["file"]:
        raise EngineError(f"{root}: engine {entry['file']} was built from {entry['onnx']}, but {graph}/{precision} "
                          f"is {variant['file']}; {REBUILD.format(root=root)}")
    return entry


def check_compatible(entry: dict, env: dict, onnx_sha256: str | None, root="DIR") -> None:
    """Refuse an engine built for another TensorRT version, GPU or ONNX file.

    Args:
        entry: a validated engines entry.
        env: this machine: {"tensorrt": version, "gpu": name, "compute_capability": "major.minor"}.
        onnx_sha256: the sha256 the manifest lists for the engine's ONNX file now.
    Raises:
        EngineError: naming what differs (built-for vs here) and the rebuild command.
    """
    fix = REBUILD.format(root=root)
    name = entry["file"]
    if entry["tensorrt"] != env["tensorrt"]:
        raise EngineError(f"{name} was built with TensorRT {entry['tensorrt']}, this is TensorRT {env['tensorrt']}: "
                          f"engines do not carry across TensorRT versions; {fix}")
    if entry["compute_capability"] != env["compute_capability"] or entry["gpu"] != env["gpu"]:
        raise EngineError(f"{name} was built for {entry['gpu']} (compute capability {entry['compute_capability']}), "
                          f"this GPU is {env['gpu']} ({env['compute_capability']}): engines are specific to the GPU "
                          f"model; {fix}")
    if onnx_sha256 != entry["onnx_sha256"]:
        raise EngineError(f"{name} was built from {entry['onnx']} with sha256 {entry['onnx_sha256'][:16]}…, the bundle's "
                          f"{entry['onnx']} is {str(onnx_sha256)[:16]}… (recalibrated or re-exported since); {fix}")


def check_shape(entry: dict, tensor: str, shape: tuple) -> None:
    """Refuse an input outside the engine's optimisation profile, naming the limit and the fix."""
    dims = entry["profile"].get(tensor)
    if dims is None:
        return
    lo, hi = dims["min"], dims["max"]
    if len(shape) != len(lo) or any(s < a or s > b for s, a, b in zip(shape, lo, hi)):
        raise VlfrontError(f"{entry['file']}: input {tensor} has shape {list(shape)}, the engine's profile allows "
                           f"{lo} to {hi}; split the batch, or rebuild with a larger "
                           "`vlfront engines --max-batch N`")


def logger(trt):
    """The process's one trt.Logger (TensorRT keeps a pointer to the first logger it is given)."""
    global _LOGGER
    if _LOGGER is None:
        _LOGGER = trt.Logger(trt.Logger.WARNING)
    return _LOGGER


def environment() -> dict:
    """This machine's TensorRT version, GPU name and compute capability.

    Raises:
        EngineError: tensorrt or torch does not import, or no CUDA GPU is visible (says which).
    """
    try:
        import tensorrt as trt
    except ImportError as e:
        raise EngineError(f"TensorRT is not installed ({e}); on a CUDA machine run `make gpu-setup` "
                          f"(pip install 'vlfront[gpu]': tensorrt-cu12=={PINNED_TENSORRT})")
    try:
        import torch
    except ImportError as e:
        raise EngineError(f"torch is not installed ({e}); the TensorRT backend allocates GPU memory through "
                          "torch.cuda: install a CUDA build of torch")
    if not torch.cuda.is_available():
        raise EngineError("no CUDA GPU is visible (torch.cuda.is_available() is False)")
    major, minor = torch.cuda.get_device_capability(0)
    return {"tensorrt": trt.__version__, "gpu": torch.cuda.get_device_name(0),
            "compute_capability": f"{major}.{minor}"}


class TensorRTRunner(Runner):
    """Runs both graphs from the bundle's engines; refuses stale or foreign engines (see module docstring)."""

    name = "tensorrt"

    @classmethod
    def usable(cls, bundle, precision: str) -> bool:
        """True when TensorRT and a GPU are here and both graphs have compatible engines. Never raises."""
        try:
            env = environment()
            for graph in GRAPHS:
                entry = find_engine(bundle.manifest, graph, precision, bundle.root)
                listed = bundle.manifest["files"].get(entry["onnx"], {}).get("sha256")
                check_compatible(entry, env, listed, bundle.root)
            return True
        except Exception:  # usable() answers a question; every failure means "no"
            return False

    def _load_impl(self) -> None:
        env = environment()  # EngineError naming what is missing, before any import can fail
        import tensorrt as trt
        import torch

        from vlfront.runtime.backends.trt_exec import EngineRunner, TorchDevice

        self._runtime = trt.Runtime(logger(trt))
        device = TorchDevice(torch)
        dtypes = {trt.DataType.FLOAT: np.float32, trt.DataType.HALF: np.float16, trt.DataType.INT8: np.int8,
                  trt.DataType.INT32: np.int32, trt.DataType.INT64: np.int64, trt.DataType.UINT8: np.uint8,
                  trt.DataType.BOOL: np.bool_}
        contexts = int(self.options.get("contexts") or 2)
        self.engines, self.entries = {}, {}
        for graph in GRAPHS:
            entry = find_engine(self.bundle.manifest, graph, self.precision, self.bundle.root)
            listed = self.bundle.manifest["files"].get(entry["onnx"], {}).get("sha256")
            check_compatible(entry, env, listed, self.bundle.root)
            engine = self._runtime.deserialize_cuda_engine(self.bundle.path(entry["file"]).read_bytes())
            if engine is None:
                raise EngineError(f"{entry['file']}: TensorRT could not deserialize the engine; "
                                  f"{REBUILD.format(root=self.bundle.root)}")
            self.entries[graph] = entry
            self.engines[graph] = EngineRunner(
                engine, entry, device, is_input=lambda mode: mode == trt.TensorIOMode.INPUT, dtype_of=dtypes.get,
                outputs={t["name"]: t["shape"] for t in self.io[graph]["outputs"]},
                tokens_per_image=self.bundle.config.tokens_per_image, contexts=contexts)

    def _infer_impl(self, graph: str, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        return self.engines[graph].run(graph, feeds)

    def _close_impl(self) -> None:
        self.engines = {}
