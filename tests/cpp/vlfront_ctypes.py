"""A thin ctypes binding of libvlfront.so (runtime/cpp/include/vlfront/vlfront.h) for the parity tests.

Every call checks its vlf_status and raises CppError(code, message); handles are
released by their destroy functions.
"""

from __future__ import annotations

import base64
import ctypes as C
import json
import pathlib

import numpy as np

CODES = {0: "OK", 1: "INVALID_ARGUMENT", 2: "CONFIG", 3: "TOKENIZER", 4: "BUNDLE", 5: "REQUEST", 6: "IMAGE",
         7: "QUEUE_FULL", 8: "ENGINE", 9: "BACKEND", 10: "OUT_OF_MEMORY", 11: "INTERNAL"}
OUTPUTS = {"inputs_embeds": 0, "input_ids": 1, "attention_mask": 2, "image_attention_mask": 3, "pixel_values": 4,
           "images_per_request": 5, "dropped_tokens": 6}
DTYPES = {1: np.float32, 2: np.uint8, 7: np.int64}


class CppError(Exception):
    def __init__(self, code: int, message: str):
        super().__init__(f"[{CODES.get(code, code)}] {message}")
        self.code = CODES.get(code, str(code))
        self.message = message


class Tensor(C.Structure):
    _fields_ = [("data", C.c_void_p), ("dtype", C.c_int), ("rank", C.c_size_t), ("shape", C.c_int64 * 4)]


P = C.c_void_p


class Lib:
    def __init__(self, path: str | pathlib.Path):
        lib = self.lib = C.CDLL(str(path))
        sig = {
            "vlf_status_get_code": (C.c_int, [P]), "vlf_status_get_message": (C.c_char_p, [P]),
            "vlf_status_destroy": (None, [P]), "vlf_version": (C.c_char_p, []),
            "vlf_tokenizer_create": (P, [C.c_char_p, C.POINTER(P)]), "vlf_tokenizer_destroy": (None, [P]),
            "vlf_tokenizer_encode": (P, [P, C.c_char_p, C.c_size_t, C.POINTER(P)]),
            "vlf_tokens_count": (C.c_size_t, [P]), "vlf_tokens_data": (C.POINTER(C.c_int32), [P]),
            "vlf_tokens_destroy": (None, [P]),
            "vlf_image_preprocess": (P, [C.c_char_p, C.c_size_t, C.c_int64, C.c_void_p]),
            "vlf_runtime_options_create": (P, [C.POINTER(P)]), "vlf_runtime_options_destroy": (None, [P]),
            "vlf_runtime_options_set": (P, [P, C.c_char_p, C.c_char_p]),
            "vlf_runtime_create": (P, [C.c_char_p, P, C.POINTER(P)]), "vlf_runtime_destroy": (None, [P]),
            "vlf_runtime_get_int": (P, [P, C.c_char_p, C.POINTER(C.c_int64)]),
            "vlf_runtime_backend": (C.c_char_p, [P]),
            "vlf_request_create_from_json": (P, [C.c_char_p, C.c_size_t, C.POINTER(P)]),
            "vlf_request_destroy": (None, [P]),
            "vlf_runtime_embed": (P, [P, C.POINTER(P), C.c_size_t, C.POINTER(P)]),
            "vlf_runtime_process": (P, [P, C.POINTER(P), C.c_size_t, C.POINTER(P)]),
            "vlf_embeddings_get": (P, [P, C.c_int, C.POINTER(Tensor)]),
            "vlf_embeddings_get_timing": (P, [P, C.c_char_p, C.POINTER(C.c_double)]),
            "vlf_embeddings_destroy": (None, [P]),
        }
        for name, (res, args) in sig.items():
            fn = getattr(lib, name)
            fn.restype, fn.argtypes = res, args

    def check(self, status) -> None:
        if status:
            code = self.lib.vlf_status_get_code(status)
            msg = self.lib.vlf_status_get_message(status).decode()
            self.lib.vlf_status_destroy(status)
            raise CppError(code, msg)

    # -- tokenizer ------------------------------------------------------------
    def encode(self, tokenizer_path, texts: list[str]) -> list[list[int]]:
        tok = P()
        self.check(self.lib.vlf_tokenizer_create(str(tokenizer_path).encode(), C.byref(tok)))
        try:
            out = []
            for t in texts:
                data = t.encode("utf-8")
                toks = P()
                self.check(self.lib.vlf_tokenizer_encode(tok, data, len(data), C.byref(toks)))
                n = self.lib.vlf_tokens_count(toks)
                out.append(self.lib.vlf_tokens_data(toks)[:n])
                self.lib.vlf_tokens_destroy(toks)
            return out
        finally:
            self.lib.vlf_tokenizer_destroy(tok)

    def preprocess(self, data: bytes, size: int = 224) -> np.ndarray:
        out = np.zeros((size, size, 3), np.uint8)
        self.check(self.lib.vlf_image_preprocess(data, len(data), size, out.ctypes.data))
        return out


def request_json(request) -> str:
    """A Python-runtime request as the C++ JSON form (bytes images become {"base64": ...})."""
    def item(it):
        if isinstance(it, dict) and it.get("type") == "image":
            value = it.get("image")
            if isinstance(value, (bytes, bytearray)):
                value = {"base64": base64.b64encode(bytes(value)).decode()}
            elif isinstance(value, pathlib.Path):
                value = str(value)
            return dict(it, image=value)
        return it

    def message(m):
        if not isinstance(m, dict) or not isinstance(m.get("content"), list):
            return m
        return dict(m, content=[item(i) for i in m["content"]])

    if isinstance(request, dict) and isinstance(request.get("messages"), list):
        return json.dumps(dict(request, messages=[message(m) for m in request["messages"]]))
    return json.dumps([message(m) for m in request])


class Runtime:
    """libvlfront's runtime over a bundle: embed/process return dicts of numpy arrays."""

    def __init__(self, lib: Lib, bundle, **options):
        self.lib = lib
        opts = P()
        lib.check(lib.lib.vlf_runtime_options_create(C.byref(opts)))
        try:
            for k, v in options.items():
                lib.check(lib.lib.vlf_runtime_options_set(opts, k.encode(), str(v).encode()))
            self.handle = P()
            lib.check(lib.lib.vlf_runtime_create(str(bundle).encode(), opts, C.byref(self.handle)))
        finally:
            lib.lib.vlf_runtime_options_destroy(opts)

    def close(self):
        if self.handle:
            self.lib.lib.vlf_runtime_destroy(self.handle)
            self.handle = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def get_int(self, key: str) -> int:
        v = C.c_int64()
        self.lib.check(self.lib.lib.vlf_runtime_get_int(self.handle, key.encode(), C.byref(v)))
        return v.value

    def _run(self, fn, requests) -> dict:
        reqs = []
        try:
            for r in requests:
                text = request_json(r).encode()
                h = P()
                self.lib.check(self.lib.lib.vlf_request_create_from_json(text, len(text), C.byref(h)))
                reqs.append(h)
            arr = (P * len(reqs))(*reqs)
            emb = P()
            self.lib.check(fn(self.handle, arr, len(reqs), C.byref(emb)))
        finally:
            for h in reqs:
                self.lib.lib.vlf_request_destroy(h)
        try:
            out = {}
            for name, which in OUTPUTS.items():
                t = Tensor()
                self.lib.check(self.lib.lib.vlf_embeddings_get(emb, which, C.byref(t)))
                shape = tuple(t.shape[: t.rank])
                dtype = DTYPES[t.dtype]
                n = int(np.prod(shape)) if shape else 1
                if n == 0 or not t.data:
                    out[name] = np.zeros(shape, dtype)
                else:
                    buf = (C.c_char * (n * np.dtype(dtype).itemsize)).from_address(t.data)
                    out[name] = np.frombuffer(bytes(buf), dtype).reshape(shape)
            timings = {}
            for stage in ("layout", "decode", "patch_embed", "fusion", "total"):
                v = C.c_double()
                self.lib.check(self.lib.lib.vlf_embeddings_get_timing(emb, stage.encode(), C.byref(v)))
                timings[stage] = v.value
            out["timings"] = timings
            return out
        finally:
            self.lib.lib.vlf_embeddings_destroy(emb)

    def embed(self, requests) -> dict:
        return self._run(self.lib.lib.vlf_runtime_embed, requests)

    def process(self, requests) -> dict:
        return self._run(self.lib.lib.vlf_runtime_process, requests)
