"""Helpers of the Triton and shared-cache tests: requests with real photos or generated images."""

from __future__ import annotations

import io

import numpy as np


def photos() -> list[bytes]:
    """Real photos shipped with scikit-image, encoded as JPEG/PNG (different sizes and formats)."""
    from PIL import Image
    from skimage import data

    out = []
    for i, name in enumerate(["astronaut", "coffee", "chelsea", "rocket", "hubble_deep_field", "immunohistochemistry"]):
        arr = getattr(data, name)()
        buf = io.BytesIO()
        Image.fromarray(arr).save(buf, "JPEG" if i % 2 == 0 else "PNG")
        out.append(buf.getvalue())
    return out


def random_png(seed: int, size: int = 48) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(np.random.default_rng(seed).integers(0, 256, (size, size, 3), np.uint8)).save(buf, "PNG")
    return buf.getvalue()


def chat(image: bytes | None, text: str) -> list:
    content = ([{"type": "image", "image": image}] if image is not None else []) + [{"type": "text", "text": text}]
    return [{"role": "user", "content": content}]
