"""Example client for examples/server.py: one image and a question -> inputs_embeds.

    python examples/client.py --image cat.jpg --text "What is in this picture?" --out embeds.npy
"""

from __future__ import annotations

import argparse
import base64
import io
import pathlib

import httpx
import numpy as np


def embed(url: str, image: bytes, text: str, timeout: float = 60.0) -> tuple[np.ndarray, httpx.Headers]:
    """POST one user turn (image, then text); return inputs_embeds [1, max_seq_len, D] and the headers."""
    item = {"type": "image", "image_base64": base64.b64encode(image).decode("ascii")}
    body = {"messages": [{"role": "user", "content": [item, {"type": "text", "text": text}]}],
            "add_generation_prompt": True}
    r = httpx.post(f"{url}/v1/embed", json=body, headers={"Accept": "application/x-npy"}, timeout=timeout)
    if r.status_code != 200:
        is_json = r.headers.get("content-type", "").startswith("application/json")
        raise RuntimeError(f"HTTP {r.status_code}: {r.json()['error'] if is_json else r.text}")
    return np.load(io.BytesIO(r.content), allow_pickle=False), r.headers


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description="Embed an image and a text with a running examples/server.py.")
    p.add_argument("--url", default="http://127.0.0.1:8000")
    p.add_argument("--image", required=True, type=pathlib.Path)
    p.add_argument("--text", default="What is in this picture?")
    p.add_argument("--out", type=pathlib.Path, help="save inputs_embeds here (.npy)")
    a = p.parse_args(argv)
    embeds, headers = embed(a.url, a.image.read_bytes(), a.text)
    print(f"inputs_embeds {embeds.shape} {embeds.dtype}; {headers['X-Num-Tokens']} tokens, "
          f"{headers['X-Dropped-Tokens']} dropped")
    if a.out:
        np.save(a.out, embeds)


if __name__ == "__main__":
    main()
