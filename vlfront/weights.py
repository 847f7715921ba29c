"""weights.safetensors: expected tensors (SPEC section 2) and one validator at load.

Torch-free, so that the runtime can check a bundle's weights without the exporter.
The header is validated the way safetensors itself does: capped header size,
tensors back to back with no gaps or overlaps, the whole file accounted for.
"""

from __future__ import annotations

import json
import os
import struct
from dataclasses import dataclass

from vlfront.config import Config
from vlfront.errors import WeightsError

MAX_HEADER_BYTES = 100 * 1024 * 1024
_DTYPE_SIZES = {"F32": 4, "F16": 2, "BF16": 2, "F64": 8, "I64": 8, "I32": 4, "I16": 2, "I8": 1, "U8": 1, "BOOL": 1}


def expected_tensors(config: Config) -> dict[str, tuple[int, ...]]:
    """Names and shapes of the float32 tensors a weights file must hold, exactly."""
    d = config.hidden_size
    shapes = {
        "patch_embed.weight": (d, 3, config.patch_size, config.patch_size),
        "patch_embed.bias": (d,),
        "token_embed.weight": (config.vocab_rows, d),
        "position_embed.weight": (config.max_seq_len, d),
        "modality_embed.weight": (2, d),
    }
    if config.vision_pos == "learned":
        shapes["vision_position_embed.weight"] = (config.tokens_per_image, d)
    return shapes


@dataclass(frozen=True)
class TensorInfo:
    name: str
    dtype: str
    shape: tuple[int, ...]
    offset: int  # absolute offset in the file
    length: int


def read_header(path: str | os.PathLike) -> dict[str, TensorInfo]:
    """Parse and validate a safetensors header. Returns tensors by name (absolute offsets).

    Raises:
        WeightsError: unreadable file, oversized or malformed header, gaps,
            overlaps, or bytes that no tensor accounts for.
    """
    try:
        size = os.path.getsize(path)
        with open(path, "rb") as f:
            head = f.read(8)
            if len(head) < 8:
                raise WeightsError(f"{path}: {size} bytes is too short for a safetensors file")
            (n,) = struct.unpack("<Q", head)
            if n > MAX_HEADER_BYTES or 8 + n > size:
                raise WeightsError(f"{path}: header length {n} exceeds the file ({size} bytes) or the {MAX_HEADER_BYTES}-byte cap")
            raw = f.read(n)
    except OSError as e:
        raise WeightsError(f"{path}: cannot read weights: {e.strerror}") from None
    try:
        header = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise WeightsError(f"{path}: header is not valid JSON ({e})") from None
    if not isinstance(header, dict):
        raise WeightsError(f"{path}: header is not a JSON object")
    header.pop("__metadata__", None)
    base = 8 + n
    tensors: dict[str, TensorInfo] = {}
    spans = []
    for name, meta in header.items():
        try:
            dtype, shape, (begin, end) = meta["dtype"], tuple(int(s) for s in meta["shape"]), meta["data_offsets"]
            begin, end = int(begin), int(end)
        except (KeyError, TypeError, ValueError):
            raise WeightsError(f"{path}: tensor {name!r} has a malformed header entry") from None
        if dtype not in _DTYPE_SIZES or any(s < 0 for s in shape):
            raise WeightsError(f"{path}: tensor {name!r} has dtype {dtype} / shape {shape} that is not supported")
        count = 1
        for s in shape:
            count *= s
        if not 0 <= begin <= end or end - begin != count * _DTYPE_SIZES[dtype]:
            raise WeightsError(f"{path}: tensor {name!r} spans [{begin},{end}) but {dtype}{list(shape)} needs {count * _DTYPE_SIZES[dtype]} bytes")
        tensors[name] = TensorInfo(name, dtype, shape, base + begin, end - begin)
        spans.append((begin, end, name))
    pos = 0
    for begin, end, name in sorted(spans):
        if begin != pos:
            raise WeightsError(f"{path}: tensor {name!r} starts at {begin}, expected {pos} (gap or overlap)")
        pos = end
    if base + pos != size:
        raise WeightsError(f"{path}: tensors end at byte {base + pos} but the file has {size} bytes")
    return tensors


def check_weights(path: str | os.PathLike, config: Config) -> dict[str, TensorInfo]:
    """Validate a weights file against the SPEC names and shapes for `config`.

    Raises:
        WeightsError: naming the missing, extra or misshapen tensor.
    """
    tensors = read_header(path)
    expected = expected_tensors(config)
    missing = sorted(set(expected) - set(tensors))
    if missing:
        raise WeightsError(f"{path}: missing tensor(s) {missing} (hidden_size={config.hidden_size}, vision_pos={config.vision_pos})")
    extra = sorted(set(tensors) - set(expected))
    if extra:
        raise WeightsError(f"{path}: unexpected tensor(s) {extra}; a {config.vision_pos} front-end holds exactly {sorted(expected)}")
    for name, shape in expected.items():
        t = tensors[name]
        if t.shape != shape or t.dtype != "F32":
            raise WeightsError(f"{path}: tensor {name!r} is {t.dtype}{list(t.shape)}, expected F32{list(shape)}")
    return tensors


def load_numpy(path: str | os.PathLike, config: Config) -> dict:
    """Validated weights as read-only numpy arrays (memory-mapped, no copy)."""
    import numpy as np

    tensors = check_weights(path, config)
    mm = np.memmap(path, dtype=np.uint8, mode="r")
    return {
        name: mm[t.offset : t.offset + t.length].view(np.float32).reshape(t.shape) for name, t in tensors.items()
    }
