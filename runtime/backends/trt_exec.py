"""Running one TensorRT engine: a pool of execution contexts, batch splitting, checked API calls.

Pure over duck-typed objects, so the logic runs on the CPU with fakes
(tests/calibration/test_engines.py) and on a GPU with TensorRT + torch.cuda:

- `ContextPool`: an `IExecutionContext` (and its CUDA stream) serves one call at a
  time, so each concurrent caller takes its own, up to `limit` (each one holds
  activation memory for the profile's largest shapes); the rest wait.
- `split_feeds`: a batch beyond the engine's optimisation profile runs as several
  launches: patch_embed by images, fusion by requests with each request's images
  kept with it, so ONNX Runtime and TensorRT serve the same batches.
- `EngineRunner.run`: every `set_input_shape`, `set_tensor_address` and
  `execute_async_v3` result is checked, output shapes come from
  `get_tensor_shape` and are compared with the manifest, and empty tensors get a
  valid placeholder address (TensorRT refuses null addresses).
"""

from __future__ import annotations

import contextlib
import threading

import numpy as np

from vlfront.config import IMAGE_PAD_ID
from vlfront.errors import EngineError, VlfrontError


class ContextPool:
    """Hands out (context, stream) slots, one caller each, creating up to `limit` of them lazily."""

    def __init__(self, engine, device, limit: int, name: str):
        if limit < 1:
            raise VlfrontError(f"TensorRT contexts={limit}: need at least 1 execution context per engine")
        self.engine, self.device, self.limit, self.name = engine, device, limit, name
        self.made = 0
        self._idle: list = []
        self._cond = threading.Condition()

    @contextlib.contextmanager
    def take(self):
        with self._cond:
            while not self._idle and self.made >= self.limit:
                self._cond.wait()
            slot = self._idle.pop() if self._idle else None
            if slot is None:
                self.made += 1
        try:
            if slot is None:
                context = self.engine.create_execution_context()
                if context is None:
                    raise EngineError(f"{self.name}: TensorRT could not create an execution context "
                                      "(out of GPU memory?)")
                slot = (context, self.device.stream())
        except BaseException:
            with self._cond:
                self.made -= 1
                self._cond.notify()
            raise
        try:
            yield slot
        finally:
            with self._cond:
                self._idle.append(slot)
                self._cond.notify()


def _limits(entry: dict) -> dict[str, int]:
    return {name: dims["max"][0] for name, dims in entry["profile"].items()}


def split_feeds(graph: str, feeds: dict[str, np.ndarray], entry: dict, tokens_per_image: int) -> list[dict]:
    """The batch as launches that each fit the engine's profile (one launch when it fits already).

    Fusion batches split between requests; a request's images go with it (images are numbered by
    request, then appearance). A malformed batch (pads that do not match the images) is not split:
    it runs as one, and the profile check names what is too large.
    """
    limits = _limits(entry)
    if graph == "patch_embed":
        px = feeds["pixel_values"]
        step = limits.get("pixel_values", len(px)) or len(px)
        if len(px) <= step:
            return [feeds]
        return [{"pixel_values": px[i:i + step]} for i in range(0, len(px), step)]
    ids, visual = feeds["input_ids"], feeds["visual_tokens"]
    max_rows, max_images = limits.get("input_ids", len(ids)), limits.get("visual_tokens", len(visual))
    if len(ids) <= max_rows and len(visual) <= max_images:
        return [feeds]
    pads = (ids == IMAGE_PAD_ID).sum(axis=1)
    images = pads // tokens_per_image
    if np.any(pads % tokens_per_image) or images.sum() != len(visual) or np.any(images > max_images) \
            or max_rows < 1:
        return [feeds]
    out, start, first = [], 0, 0
    while start < len(ids):
        end, count = start, 0
        while end < len(ids) and end - start < max_rows and count + images[end] <= max_images:
            count += images[end]
            end += 1
        out.append({"input_ids": ids[start:end], "visual_tokens": visual[first:first + count]})
        start, first = end, first + count
    return out


class EngineRunner:
    """One deserialized engine with its pool of contexts; `run(feeds)` -> {output: array}.

    Args:
        engine: an ICudaEngine (or a fake with the same methods).
        entry: its validated manifest `engines` entry (file name, profile).
        device: memory and streams (`TorchDevice` on a GPU).
        is_input: tensor mode -> True for inputs (compares with trt.TensorIOMode.INPUT).
        dtype_of: engine tensor dtype -> numpy dtype.
        outputs: {name: manifest shape} of the graph's outputs (ints are checked, strings are batch axes).
    """

    def __init__(self, engine, entry: dict, device, *, is_input, dtype_of, outputs: dict, tokens_per_image: int,
                 contexts: int = 2):
        self.engine, self.entry, self.device = engine, entry, device
        self.name = entry["file"]
        self.tokens_per_image = tokens_per_image
        names = [engine.get_tensor_name(i) for i in range(engine.num_io_tensors)]
        self.inputs = [n for n in names if is_input(engine.get_tensor_mode(n))]
        self.outputs = [n for n in names if n not in self.inputs]
        if sorted(self.outputs) != sorted(outputs):
            raise EngineError(f"{self.name}: the engine's outputs {sorted(self.outputs)} are not the graph's "
                              f"{sorted(outputs)}; rebuild the engines (`vlfront engines`)")
        self.expected = outputs
        self.dtypes = {n: np.dtype(dtype_of(engine.get_tensor_dtype(n))) for n in names}
        self.pool = ContextPool(engine, device, contexts, self.name)

    def run(self, graph: str, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        parts = [self._launch(part) for part in split_feeds(graph, feeds, self.entry, self.tokens_per_image)]
        if len(parts) == 1:
            return parts[0]
        return {name: np.concatenate([p[name] for p in parts]) for name in self.outputs}

    def _launch(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        from vlfront.runtime.backends.tensorrt import check_shape

        for name, array in feeds.items():
            check_shape(self.entry, name, array.shape)
        dev = self.device
        with self.pool.take() as (context, stream):
            keep = []  # device buffers must outlive the launch
            for name in self.inputs:
                array = np.ascontiguousarray(feeds[name])
                if array.dtype != self.dtypes[name]:
                    raise EngineError(f"{self.name}: the engine's input {name} is {self.dtypes[name]}, the graph's is "
                                      f"{array.dtype}; rebuild the engines (`vlfront engines`)")
                buf = dev.upload(array, stream)
                keep.append(buf)
                if not context.set_input_shape(name, tuple(array.shape)):
                    raise EngineError(f"{self.name}: TensorRT refused the shape {list(array.shape)} of input {name} "
                                      f"(profile {self.entry['profile'].get(name)})")
                self._address(context, name, dev.address(buf, keep))
            results = {}
            for name in self.outputs:
                shape = tuple(int(d) for d in context.get_tensor_shape(name))
                want = self.expected[name]
                if len(shape) != len(want) or any(d < 0 for d in shape) \
                        or any(isinstance(w, int) and d != w for d, w in zip(shape, want)):
                    raise EngineError(f"{self.name}: TensorRT reports output {name} of shape {list(shape)}, the graph's "
                                      f"is {want}; rebuild the engines (`vlfront engines`)")
                buf = dev.empty(shape, self.dtypes[name], stream)
                keep.append(buf)
                self._address(context, name, dev.address(buf, keep))
                results[name] = buf
            if not context.execute_async_v3(dev.handle(stream)):
                raise EngineError(f"{self.name}: TensorRT execution failed (see the TensorRT log)")
            dev.synchronize(stream)
            return {name: dev.download(buf) for name, buf in results.items()}

    def _address(self, context, name: str, address: int) -> None:
        if not address or not context.set_tensor_address(name, address):
            raise EngineError(f"{self.name}: TensorRT refused the device address of tensor {name}")


class TorchDevice:
    """CUDA memory and streams through torch.cuda (the only GPU dependency besides tensorrt)."""

    def __init__(self, torch):
        self.torch = torch
        self._types = {np.dtype(np.float32): torch.float32, np.dtype(np.float16): torch.float16,
                       np.dtype(np.int8): torch.int8, np.dtype(np.int32): torch.int32,
                       np.dtype(np.int64): torch.int64, np.dtype(np.uint8): torch.uint8,
                       np.dtype(np.bool_): torch.bool}

    def stream(self):
        return self.torch.cuda.Stream()

    def handle(self, stream) -> int:
        return stream.cuda_stream

    def upload(self, array: np.ndarray, stream):
        with self.torch.cuda.stream(stream):
            return self.torch.from_numpy(array).to("cuda", non_blocking=False)

    def empty(self, shape: tuple, dtype: np.dtype, stream):
        with self.torch.cuda.stream(stream):
            return self.torch.empty(shape, dtype=self._types[np.dtype(dtype)], device="cuda")

    def address(self, buf, keep: list) -> int:
        """The buffer's address, or a 1-byte placeholder's for an empty tensor (kept alive in `keep`)."""
        if buf.numel():
            return buf.data_ptr()
        holder = self.torch.empty(1, dtype=self.torch.uint8, device="cuda")
        keep.append(holder)
        return holder.data_ptr()

    def synchronize(self, stream) -> None:
        stream.synchronize()

    def download(self, buf) -> np.ndarray:
        return buf.cpu().numpy()
