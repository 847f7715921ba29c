"""The Python-backend model that `vlfront triton` writes: Triton's dynamic batcher -> `Runtime.embed_each`.

Triton hands `execute` every request its dynamic batcher gathered; each carries one or more
`request` elements (shape [k, 1]). All elements go to the runtime as one batch (one patch_embed
and one fusion call); a bad element fails only its Triton request, as a TritonError with our message.
"""

from __future__ import annotations

import importlib
import json

import numpy as np

from vlfront.errors import RequestError, VlfrontError
from vlfront.runtime.images import ImageLimits
from vlfront.runtime.triton.request import MiB, parse_request

OUTPUTS = ("inputs_embeds", "input_ids", "attention_mask", "image_attention_mask", "dropped_tokens")


def model_parameters(model_config: dict) -> dict[str, str]:
    return {k: v.get("string_value", "") for k, v in model_config.get("parameters", {}).items()}


class VlfrontModel:
    """State of one model instance (one stub process): a Runtime on the bundle the config names."""

    def __init__(self, args: dict, pb_utils=None):
        from vlfront.runtime import Runtime

        self.pb = pb_utils or importlib.import_module("triton_python_backend_utils")
        config = json.loads(args["model_config"])
        p = model_parameters(config)
        self.max_request_bytes = int(float(p.get("max_request_mb") or 64) * MiB)
        threads = int(p.get("threads") or 0) or None
        self.runtime = Runtime.load(p["bundle"], p.get("backend") or "auto", p.get("precision") or "fp32",
                                    threads=threads, image_limits=ImageLimits(allow_paths=False),
                                    output_dtype=p.get("output_dtype") or "float32", cache=p.get("cache") or None,
                                    decode=p.get("decode") or "exact")
        self.logger = getattr(self.pb, "Logger", None)
        self._log(f"vlfront: serving {p['bundle']} ({self.runtime.stats()})")

    def execute(self, requests: list) -> list:
        parsed: list[list] = []  # per Triton request: its parsed elements, or the RequestError of the first bad one
        for r in requests:
            parsed.append(self._parse(r))
        flat = [req for rows in parsed if not isinstance(rows, RequestError) for req in rows]
        try:
            results = iter(self.runtime.embed_each(flat)) if flat else iter(())
        except Exception as e:  # noqa: BLE001 — a whole-batch failure fails each of its requests, not the model
            err = e if isinstance(e, VlfrontError) else VlfrontError(f"batch failed: {type(e).__name__}: {e}")
            return [self._error(err) for _ in requests]
        responses = []
        for r, rows in zip(requests, parsed):
            if isinstance(rows, RequestError):
                responses.append(self._error(rows))
                continue
            outs = [next(results) for _ in rows]
            bad = next(((j, o) for j, o in enumerate(outs) if isinstance(o, Exception)), None)
            if bad is not None:
                j, e = bad
                responses.append(self._error(e, j if len(rows) > 1 else None))
            else:
                responses.append(self._response(outs, self._wanted(r)))
        return responses

    def finalize(self) -> None:
        self.runtime.close()

    # --- helpers ------------------------------------------------------------------
    def _parse(self, request):
        tensor = self.pb.get_input_tensor_by_name(request, "request")
        if tensor is None:
            return RequestError('the input "request" is missing')
        elements = tensor.as_numpy().reshape(-1)
        images = self._images(request, len(elements))
        if isinstance(images, RequestError):
            return images
        rows = []
        for j, raw in enumerate(elements):
            try:
                rows.append(parse_request(raw, self.max_request_bytes, None if images is None else images[j]))
            except RequestError as e:
                return RequestError(f"element {j}: {e.reason}" if len(elements) > 1 else e.reason)
        return rows

    def _images(self, request, n: int):
        """Rows of the optional `images` input (encoded files), one per element of `request`, or None."""
        tensor = self.pb.get_input_tensor_by_name(request, "images")
        if tensor is None:
            return None
        files = tensor.as_numpy()
        if files.ndim != 2 or files.shape[0] != n:
            return RequestError(f'the "images" input has shape {list(files.shape)}; it needs [{n}, k]: one row of '
                                'k encoded files per element of "request" (pad shorter rows with empty elements)')
        return [list(row) for row in files]

    @staticmethod
    def _wanted(request) -> tuple:
        """The outputs the client asked for (Triton lists all of them when it named none): only those
        are copied into the stub's shared memory; Triton would drop the others anyway."""
        names = getattr(request, "requested_output_names", None)
        wanted = set(names()) if names is not None else set()
        return tuple(n for n in OUTPUTS if n in wanted) or OUTPUTS

    def _response(self, outs: list, names: tuple = OUTPUTS):
        def rows(name):  # one element (the usual case): its row as it is, no copy
            if name == "dropped_tokens":
                return np.array([[o.dropped_tokens[0]] for o in outs], np.int64)
            parts = [getattr(o, name) for o in outs]
            return np.ascontiguousarray(parts[0]) if len(parts) == 1 else np.concatenate(parts)

        tensors = [self.pb.Tensor(name, rows(name)) for name in names]
        return self.pb.InferenceResponse(output_tensors=tensors)

    def _error(self, e: Exception, element: int | None = None):
        reason = e.reason if isinstance(e, RequestError) else str(e)
        if element is not None:
            reason = f"element {element}: {reason}"
        error_type = self.pb.TritonError
        code = getattr(error_type, "INVALID_ARG", None) if isinstance(e, RequestError) else None
        error = error_type(reason, code) if code is not None else error_type(reason)
        return self.pb.InferenceResponse(output_tensors=[], error=error)

    def _log(self, message: str) -> None:
        if self.logger is not None:
            self.logger.log_info(message)
