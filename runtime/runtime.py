"""`Runtime`: a validated bundle + host-side tokenizer -> fixed-length `inputs_embeds`."""

from __future__ import annotations

import os
import pathlib
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import numpy as np

from vlfront.errors import BundleError, RequestError, VlfrontError
from vlfront.runtime.backends.base import Runner, select_backend
from vlfront.runtime.bundle import Bundle
from vlfront.runtime.cache import VisualTokenCache
from vlfront.runtime.decode_pool import decode_all
from vlfront.runtime.memory import tune_malloc
from vlfront.runtime.processor import Layout, Processor, unexpected_request_error
from vlfront.runtime.shared_cache import open_shared_cache
from vlfront.runtime.tokenizer import Tokenizer

PRECISIONS = ("fp32", "fp16", "int8")
OUTPUT_DTYPES = {"float32": np.float32, "float16": np.float16}


@dataclass
class EmbedOutput:
    """What `Runtime.embed` returns for a batch of B requests.

    Attributes:
        inputs_embeds: [B, max_seq_len, D] float32 (or float16 on request).
        input_ids, attention_mask, image_attention_mask: [B, max_seq_len] int64.
        pixel_values: [n_images, H, W, 3] uint8, images of the batch in request then appearance order.
        images_per_request: how many of `pixel_values` belong to each request.
        dropped_tokens: text tokens truncated from each request.
        timings: seconds per stage (layout, decode, patch_embed, fusion, total).
    """

    inputs_embeds: np.ndarray
    input_ids: np.ndarray
    attention_mask: np.ndarray
    image_attention_mask: np.ndarray
    pixel_values: np.ndarray
    images_per_request: list[int]
    dropped_tokens: list[int]
    timings: dict[str, float] = field(default_factory=dict)


class Runtime:
    """Serve a bundle. Thread-safe: several threads may call `embed` at once.

    Example:
        >>> rt = Runtime.load("build/default")
        >>> out = rt.embed([{"role": "user", "content": [{"type": "image", "image": "cat.jpg"},
        ...                                           {"type": "text", "text": "What is this?"}]}])
        >>> out.inputs_embeds.shape
        (1, 1024, 768)
    """

    def __init__(self, bundle: Bundle, runner: Runner, tokenizer: Tokenizer, *, truncation: str = "truncate",
                 cache_bytes: int = 256 * 1024 * 1024, output_dtype: str = "float32", image_limits=None,
                 decode_threads: int | None = None, cache: str | None = None, decode: str = "exact"):
        if output_dtype not in OUTPUT_DTYPES:
            raise VlfrontError(f"output_dtype={output_dtype!r}: choose one of {sorted(OUTPUT_DTYPES)}")
        self.bundle = bundle
        self.config = bundle.config
        self.runner = runner
        self.tokenizer = tokenizer
        self.processor = Processor(tokenizer, self.config, truncation=truncation, image_limits=image_limits,
                                   decode=decode)
        self.decode = decode  # "exact" | "fast" | "fastest": part of every image key (runtime/images.py)
        tune_malloc()  # large decodes in the pool without page-faulting every buffer again (runtime/memory.py)
        self.cache = VisualTokenCache(cache_bytes)
        self.output_dtype = output_dtype
        self._pool = ThreadPoolExecutor(max_workers=decode_threads or min(8, os.cpu_count() or 1),
                                        thread_name_prefix="vlfront-decode")
        self.shared_cache = open_shared_cache(cache, self)  # Redis, behind the local LRU (None: off)

    @classmethod
    def load(cls, bundle: str | os.PathLike, backend: str = "auto", precision: str = "fp32", *,
             threads: int | None = None, device: str = "auto", verify: bool = True, **kwargs) -> "Runtime":
        """Validate `bundle` and start a backend on it.

        Args:
            bundle: bundle directory written by `vlfront export`.
            backend: "auto" (TensorRT when its engines and library are present, else ONNX Runtime),
                "onnxruntime" or "tensorrt".
            precision: "fp32", "fp16" or "int8" (the variant must be in the bundle).
            threads: ONNX Runtime intra-op threads (default: all cores).
            verify: for int8/fp16, run the bundle's acceptance probe on the backend that will serve and
                refuse to load below the calibration gate (runtime/probe.py); False skips it (logged).
            **kwargs: truncation ("truncate" | "error"), cache_bytes, output_dtype ("float32" | "float16"),
                image_limits, decode_threads, cache ("redis://host:port/db": a visual-token cache shared by
                replicas, behind the local one; docs/triton.md), decode ("exact": SPEC 1.4, the default;
                "fast" / "fastest": DCT-scaled JPEG decoding to >= 2x / >= 1.5x the output size, deviation in
                docs/images.md).
        Raises:
            BundleError: the bundle is missing, tampered with, or lacks the asked precision (says what to rebuild),
                or the int8/fp16 variant is below its gate on this machine (says what to serve instead).
        """
        if precision not in PRECISIONS:
            raise BundleError(f"precision={precision!r}: choose one of {PRECISIONS}")
        b = Bundle.open(pathlib.Path(bundle))
        tokenizer = Tokenizer.from_file(b.path(b.manifest["tokenizer"]["file"]))
        runner = select_backend(b, backend, precision, threads=threads, device=device).load()
        if precision != "fp32":
            _accept(b, runner, precision, verify)
        return cls(b, runner, tokenizer, **kwargs)

    # --- serving ------------------------------------------------------------
    def embed(self, requests: list, *, output_dtype: str | None = None) -> EmbedOutput:
        """Embed a batch of requests (SPEC message lists or {"messages": ...} dicts).

        Raises:
            RequestError: the first bad request, naming its index; the batch is not embedded
                (use `embed_each` to embed the others).
        """
        out, _, _ = self._run(requests, output_dtype, isolate=False)
        return out

    def embed_each(self, requests: list, *, output_dtype: str | None = None) -> list:
        """Embed a batch, isolating failures: one EmbedOutput (B=1) or one RequestError per request."""
        out, ok, errors = self._run(requests, output_dtype, isolate=True)
        results = list(errors)
        start = 0
        for row, i in enumerate(ok):
            n = out.images_per_request[row]
            results[i] = EmbedOutput(
                out.inputs_embeds[row : row + 1], out.input_ids[row : row + 1], out.attention_mask[row : row + 1],
                out.image_attention_mask[row : row + 1], out.pixel_values[start : start + n], [n],
                [out.dropped_tokens[row]], out.timings)
            start += n
        return results

    def _run(self, requests, output_dtype, isolate: bool) -> tuple[EmbedOutput | None, list[int], list]:
        """Embed the good requests. Without `isolate`, the first error is raised as soon as it is known."""
        if not isinstance(requests, (list, tuple)) or not requests:
            raise RequestError("requests must be a non-empty list of requests")
        dtype_name = output_dtype or self.output_dtype
        if dtype_name not in OUTPUT_DTYPES:
            raise VlfrontError(f"output_dtype={dtype_name!r}: choose one of {sorted(OUTPUT_DTYPES)}")
        t0 = time.perf_counter()
        errors: list = [None] * len(requests)
        layouts: dict[int, Layout] = {}
        for i, request in enumerate(requests):
            try:
                layouts[i] = self.processor.layout(request, i)
            except RequestError as e:
                errors[i] = e
            except Exception as e:  # noqa: BLE001 — never let one request's surprise fail the others
                errors[i] = unexpected_request_error(e, i)
        timings = {"layout": time.perf_counter() - t0}
        _raise_first(errors, isolate)
        images = self._images(layouts, errors, timings)
        _raise_first(errors, isolate)
        ok = [i for i in sorted(layouts) if errors[i] is None]
        if not ok:
            timings["total"] = time.perf_counter() - t0
            return None, ok, errors
        lays = [layouts[i] for i in ok]
        visual = [images[src.key][0] for lay in lays for src in lay.images]
        pixels = [images[src.key][1] for lay in lays for src in lay.images]
        cfg = self.config
        ids = np.stack([lay.input_ids for lay in lays])
        vt = np.stack(visual) if visual else np.zeros((0, cfg.tokens_per_image, cfg.hidden_size), np.float32)
        t1 = time.perf_counter()
        embeds = self.runner.infer("fusion", {"input_ids": ids, "visual_tokens": vt})["inputs_embeds"]
        if dtype_name != "float32":
            embeds = embeds.astype(OUTPUT_DTYPES[dtype_name])
        timings["fusion"] = time.perf_counter() - t1
        timings["total"] = time.perf_counter() - t0
        out = EmbedOutput(
            embeds, ids, np.stack([lay.attention_mask for lay in lays]),
            np.stack([lay.image_attention_mask for lay in lays]),
            np.stack(pixels) if pixels else np.zeros((0, cfg.image_size, cfg.image_size, 3), np.uint8),
            [len(lay.images) for lay in lays], [lay.dropped_tokens for lay in lays], timings)
        return out, ok, errors

    def _images(self, layouts: dict[int, Layout], errors: list, timings: dict) -> dict:
        """Visual tokens + pixels per image key of the good requests: from the cache, else decode + patch_embed.

        Each distinct key is decoded once per batch; when that fails, every request holding
        the key fails with the image's error, and the other requests go on.
        """
        found: dict = {}
        todo: dict[bytes, object] = {}
        for lay in layouts.values():
            for src in lay.images:
                if src.key in found or src.key in todo:
                    continue
                hit = self.cache.get(src.key)
                if hit is not None:
                    found[src.key] = (hit.visual_tokens, hit.pixel_values)
                else:
                    todo[src.key] = src
        if self.shared_cache is not None and todo:
            for k, (tokens, px) in self.shared_cache.get_many(list(todo)).items():
                found[k] = (tokens, px)
                self.cache.put(k, tokens, px, owned=True)  # read-only views of a private buffer: no copy
                del todo[k]
        t0 = time.perf_counter()
        decoded = dict(zip(todo, _decode_all(self._pool, list(todo.values()))))
        failed = {k: v for k, v in decoded.items() if isinstance(v, Exception)}
        for i, lay in layouts.items():
            bad = next((failed[s.key] for s in lay.images if s.key in failed), None)
            if bad is not None and errors[i] is None:
                errors[i] = bad if bad.index == i else type(bad)(bad.reason, i)
        pixels = {k: v for k, v in decoded.items() if k not in failed}
        t1 = time.perf_counter()
        if pixels:
            batch = np.stack(list(pixels.values()))
            vt = self.runner.infer("patch_embed", {"pixel_values": batch})["visual_tokens"]
            for (k, px), tokens in zip(pixels.items(), vt):
                found[k] = (tokens, px)
                self.cache.put(k, tokens, px)
            if self.shared_cache is not None:
                self.shared_cache.put_many({k: found[k] for k in pixels})
        timings["decode"] = t1 - t0
        timings["patch_embed"] = time.perf_counter() - t1
        return found

    def stats(self) -> dict:
        stats = {"cache": self.cache.stats(), "backend": self.runner.name, "precision": self.runner.precision}
        if self.shared_cache is not None:
            stats["shared_cache"] = self.shared_cache.stats()
        return stats

    def close(self) -> None:
        self.runner.close()
        if self.shared_cache is not None:
            self.shared_cache.close()
        self._pool.shutdown(wait=False)

    def __enter__(self) -> "Runtime":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def _accept(bundle: Bundle, runner: Runner, precision: str, verify: bool) -> None:
    """The load-time acceptance probe (runtime/probe.py); the runner is closed when it refuses."""
    from vlfront.runtime import probe

    if not verify:
        probe.skipped(bundle, precision)
        return
    try:
        probe.verify(bundle, runner, precision)
    except BaseException:
        runner.close()
        raise


def _raise_first(errors: list, isolate: bool) -> None:
    if not isolate:
        first = next((e for e in errors if e is not None), None)
        if first is not None:
            raise first


def _decode(src):
    try:
        return src.decode()
    except RequestError as e:
        return e
    except Exception as e:  # a decoder bug must fail this image only, never the batch
        return RequestError(f"image could not be decoded: {type(e).__name__}: {e}")


def _decode_all(pool: ThreadPoolExecutor, sources: list) -> list:
    """Decode on the pool and on the calling thread: one image never waits for a pool thread's wake-up
    (0.3 MP batch 1 on busy cores: 24.8 ms through the pool vs 13.6 ms for the reference; docs/images.md)."""
    if not sources:
        return []
    # The caller and the pool take images one at a time from a shared index (runtime/decode_pool.py).
    return decode_all(pool, sources, _decode, getattr(pool, "_max_workers", 1))


__all__ = ["Runtime", "EmbedOutput"]
