"""`Processor`: the call Qwen-VL users already write, as a thin layer over `Runtime`.

    from vlfront.runtime import Processor
    processor = Processor.from_pretrained("build/default")
    inputs = processor(messages, return_tensors="pt", padding=True)
    inputs["input_ids"].shape          # torch.Size([1, n]) with n the longest real sequence

It returns a dict of `input_ids`, `attention_mask`, `image_attention_mask`
(int64 [B, L]), `pixel_values` (uint8 [n_images, 224, 224, 3], RGB, SPEC 1.4:
the patch-embedding graph normalizes inside, so these are not the float
patches of transformers' Qwen2-VL processor) and `images_per_request` (int64
[B]); with `return_inputs_embeds=True` also `inputs_embeds` (float32 [B, L, D],
from the bundle's graphs). torch is imported only for `return_tensors="pt"`.

padding, as in transformers: True / "longest" pads to the longest request of
the call; "max_length" to max_seq_len (the fixed SPEC layout the fusion graph
and the servers use); False only for a single request (no padding). Padding is
always on the right with <|endoftext|> (151643): SPEC positions start at 0.
"""

from __future__ import annotations

import os

import numpy as np

from vlfront.errors import RequestError

PADDING = (True, False, "longest", "max_length", "do_not_pad")
RETURN_TENSORS = ("np", "pt", None)


class Processor:
    """Chat requests -> model inputs, like transformers' processors, over a loaded Runtime.

    Args:
        runtime: a `vlfront.runtime.Runtime`; the Processor does not own it unless made by from_pretrained.

    Example:
        >>> p = Processor.from_pretrained("build/default")
        >>> out = p([{"role": "user", "content": "Hi"}], return_tensors="np")
        >>> out["input_ids"].tolist()
        [[151644, 872, 198, 13048, 151645, 198, 151644, 77091, 198]]
    """

    def __init__(self, runtime):
        self.runtime = runtime
        self._owned = False

    @classmethod
    def from_pretrained(cls, bundle: str | os.PathLike, **load_kwargs) -> "Processor":
        """Load `bundle` (Runtime.load arguments pass through) and wrap it."""
        from vlfront.runtime.runtime import Runtime

        p = cls(Runtime.load(bundle, **load_kwargs))
        p._owned = True
        return p

    def __call__(self, messages, return_tensors: str | None = "np", padding=True,
                 return_inputs_embeds: bool = False) -> dict:
        """Lay out one request or a batch and return its tensors.

        Args:
            messages: one request (a list of messages, or {"messages": [...], ...}) or a list of requests.
            return_tensors: "np" (numpy, also None) or "pt" (torch tensors sharing the numpy memory).
            padding: True / "longest", "max_length", or False / "do_not_pad" (one request only).
            return_inputs_embeds: also run the bundle's graphs and return inputs_embeds.
        Returns:
            dict name -> array (see the module docstring).
        Raises:
            RequestError: the first bad request, naming its index; or bad arguments.
        """
        if return_tensors not in RETURN_TENSORS:
            raise RequestError(f"return_tensors={return_tensors!r}: choose 'np' or 'pt'")
        if padding not in PADDING:
            raise RequestError(f"padding={padding!r}: choose True/'longest', 'max_length' or False")
        requests = _as_batch(messages)
        if padding in (False, "do_not_pad") and len(requests) > 1:
            raise RequestError(f"padding=False gives ragged rows for {len(requests)} requests; "
                               "use padding=True (longest) or 'max_length'")
        out = self._arrays(requests, return_inputs_embeds)
        if padding != "max_length":
            n = int(out["attention_mask"].sum(axis=1).max())
            for name in ("input_ids", "attention_mask", "image_attention_mask", "inputs_embeds"):
                if name in out:
                    out[name] = np.ascontiguousarray(out[name][:, :n])
        if return_tensors == "pt":
            import torch  # only here: the runtime itself never needs torch

            return {k: torch.from_numpy(v) for k, v in out.items()}
        return out

    def apply_chat_template(self, messages, add_generation_prompt: bool = True, tokenize: bool = True,
                            return_dict: bool = False, return_tensors: str | None = None, padding=True):
        """transformers' `processor.apply_chat_template(..., tokenize=True)`: the SPEC layout's ids.

        Returns input_ids ([B, L] array or tensor; a list of lists when return_tensors is None), or
        with return_dict=True the whole dict of `__call__`.
        Raises:
            RequestError: tokenize=False (the rendered string is transformers' business: load the
                bundle with AutoTokenizer, docs/openai.md) or a bad request.
        """
        if not tokenize:
            raise RequestError("tokenize=False is not supported: vlfront lays out ids directly; for the rendered "
                               "string use transformers.AutoTokenizer.from_pretrained(bundle).apply_chat_template")
        batch = [_with_prompt(r, add_generation_prompt) for r in _as_batch(messages)]
        out = self(batch, return_tensors=return_tensors or "np", padding=padding)
        if return_dict:
            return out
        if return_tensors is None:
            mask = out["attention_mask"]
            return [row[: int(n)].tolist() for row, n in zip(out["input_ids"], mask.sum(axis=1))]
        return out["input_ids"]

    def _arrays(self, requests: list, with_embeds: bool) -> dict:
        rt = self.runtime
        if with_embeds:
            e = rt.embed(requests)
            out = {"input_ids": e.input_ids, "attention_mask": e.attention_mask,
                   "image_attention_mask": e.image_attention_mask, "pixel_values": e.pixel_values,
                   "inputs_embeds": e.inputs_embeds}
            out["images_per_request"] = np.asarray(e.images_per_request, np.int64)
            return out
        # Without the graphs: layouts and SPEC 1.4 pixels only.
        layouts = [rt.processor.layout(r, i) for i, r in enumerate(requests)]
        pixels = [src.decode() for lay in layouts for src in lay.images]
        size = rt.config.image_size
        return {
            "input_ids": np.stack([lay.input_ids for lay in layouts]),
            "attention_mask": np.stack([lay.attention_mask for lay in layouts]),
            "image_attention_mask": np.stack([lay.image_attention_mask for lay in layouts]),
            "pixel_values": np.stack(pixels) if pixels else np.zeros((0, size, size, 3), np.uint8),
            "images_per_request": np.asarray([len(lay.images) for lay in layouts], np.int64),
        }

    def close(self) -> None:
        if self._owned:
            self.runtime.close()

    def __enter__(self) -> "Processor":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def _with_prompt(request, add_generation_prompt: bool):
    if isinstance(request, dict):
        return {**request, "add_generation_prompt": add_generation_prompt}
    return {"messages": request, "add_generation_prompt": add_generation_prompt}


def _is_message(x) -> bool:
    return isinstance(x, dict) and "role" in x


def _as_batch(messages) -> list:
    """One request -> [request]; a list of requests stays as it is."""
    if isinstance(messages, dict):
        return [messages]
    if not isinstance(messages, (list, tuple)) or not messages:
        raise RequestError("messages must be a request (a non-empty list of messages, or {'messages': [...]}) "
                           f"or a non-empty list of requests, got {type(messages).__name__}"
                           + (" (empty)" if isinstance(messages, (list, tuple)) else ""))
    if all(_is_message(m) for m in messages):
        return [messages]
    return list(messages)
