"""Helpers of the Triton and shared-cache tests: requests with real photos or generated images."""

from __future__ import annotations

import io

import numpy as np
import pytest

from vlfront.runtime.triton import services


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


def triton_or_skip() -> None:
    try:
        services.triton_install()
    except services.ServiceError as e:
        pytest.skip(str(e))
    env = services.stub_env()
    if not (env / "bin" / "python3").exists():
        pytest.skip(f"no python-backend stub env at {env}: run `make setup`")


OUTPUTS = ("inputs_embeds", "input_ids", "attention_mask", "image_attention_mask", "dropped_tokens")


def infer(server, request: bytes, protocol: str):
    import tritonclient.grpc as grpcclient
    import tritonclient.http as httpclient

    client_mod = httpclient if protocol == "http" else grpcclient
    client = client_mod.InferenceServerClient(server.http_url if protocol == "http" else server.grpc_url)
    inp = client_mod.InferInput("request", [1, 1], "BYTES")
    inp.set_data_from_numpy(np.array([[request]], dtype=object))
    try:
        result = client.infer("vlfront", [inp], outputs=[client_mod.InferRequestedOutput(n) for n in OUTPUTS])
    finally:
        client.close()  # open connections would hold the server's shutdown for its exit timeout
    return {n: result.as_numpy(n) for n in OUTPUTS}


def expect(reference, messages) -> dict:
    out = reference.embed([messages])
    return {"inputs_embeds": out.inputs_embeds, "input_ids": out.input_ids, "attention_mask": out.attention_mask,
            "image_attention_mask": out.image_attention_mask,
            "dropped_tokens": np.array([out.dropped_tokens], np.int64)}


def assert_same(got: dict, want: dict) -> None:
    for n in OUTPUTS:
        assert got[n].dtype == want[n].dtype and np.array_equal(got[n], want[n]), n
