"""examples/server.py over real HTTP: uvicorn on loopback, concurrent clients, values equal to Runtime.embed."""

from __future__ import annotations

import asyncio
import base64
import importlib.util
import io
import pathlib
import socket

import httpx
import numpy as np
import pytest
import skimage
from safetensors.numpy import load as safetensors_load

from vlfront.errors import QueueFullError
from serving import uvicorn_serving
from vlfront.runtime import Runtime

EXAMPLES = pathlib.Path(__file__).resolve().parents[2] / "examples"
DATA = pathlib.Path(skimage.__file__).parent / "data"
PHOTOS = [(DATA / n).read_bytes() for n in ("rocket.jpg", "astronaut.png", "coffee.png", "chelsea.png",
                                             "motorcycle_left.png")]
TEXTS = ["What is in this picture?", "这是什么火箭？ Describe it.", "Compare the two images.", "Ünïcödé café ☕"]


def load_example(name: str):
    spec = importlib.util.spec_from_file_location(f"vlfront_example_{name}", EXAMPLES / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


server_mod = load_example("server")


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def body(content, add_prompt=True, system=None) -> dict:
    messages = [{"role": "system", "content": system}] if system else []
    return {"messages": messages + [{"role": "user", "content": content}], "add_generation_prompt": add_prompt}


def as_runtime_request(b: dict) -> dict:
    """The request the server should hand to the runtime: base64 images decoded to bytes."""
    def item(it):
        return {"type": "image", "image": base64.b64decode(it["image_base64"])} if it["type"] == "image" else it

    return {"messages": [{**m, "content": m["content"] if isinstance(m["content"], str)
                          else [item(it) for it in m["content"]]} for m in b["messages"]],
            "add_generation_prompt": b["add_generation_prompt"]}


@pytest.fixture(scope="module")
def rt(tiny_bundle):
    with Runtime.load(tiny_bundle) as runtime:
        yield runtime


@pytest.fixture(scope="module")
def server(tiny_bundle):
    """uvicorn serving examples/server.py in a thread, on a loopback socket bound to a free port."""
    app = server_mod.create_app(tiny_bundle, max_batch=8, max_wait_s=0.05)
    with uvicorn_serving(app) as (url, _, _):
        yield url, app
    with pytest.raises(Exception, match="closed"):  # the lifespan closed the batcher
        app.state.batcher.submit({"messages": [{"role": "user", "content": "x"}]})


def post_all(url: str, bodies: list, headers=None) -> list[httpx.Response]:
    async def go():
        async with httpx.AsyncClient(base_url=url, timeout=30) as client:
            return await asyncio.gather(*(client.post("/v1/embed", json=b, headers=headers) for b in bodies))

    return asyncio.run(asyncio.wait_for(go(), 60))


def npy(response: httpx.Response) -> np.ndarray:
    assert response.headers["content-type"] == "application/x-npy"
    return np.load(io.BytesIO(response.content), allow_pickle=False)


def test_concurrent_requests_equal_runtime_embed_and_a_corrupt_image_fails_alone(server, rt):
    url, _ = server
    bodies = []
    for k in range(18):
        photo, other = PHOTOS[k % 5], PHOTOS[(k + 2) % 5]
        content = [{"type": "image", "image_base64": b64(photo)}, {"type": "text", "text": f"{TEXTS[k % 4]} #{k}"}]
        if k % 3 == 0:
            content.append({"type": "image", "image_base64": b64(other)})
        if k == 7:
            content = "word " * 700  # text only, over max_text_tokens: truncated
        bodies.append(body(content, add_prompt=k % 4 != 1, system="Be brief." if k % 5 == 0 else None))
    truncated_jpeg = PHOTOS[0][: len(PHOTOS[0]) // 2]
    bodies[5] = body([{"type": "text", "text": "broken"}, {"type": "image", "image_base64": b64(truncated_jpeg)}])
    bodies[11] = body([{"type": "image", "image_base64": b64(b"\x89PNG\r\n\x1a\n not really")}])

    responses = post_all(url, bodies)

    for k, why in ((5, "truncated"), (11, "not a readable image")):
        assert responses[k].status_code == 400, responses[k].text
        err = responses[k].json()
        assert why in err["error"] and "message 0, item" in err["error"] and err["index"] == 0
        assert not err["error"].startswith("request ")  # the batcher's slot number is not the client's business
    good = [k for k in range(18) if k not in (5, 11)]
    expected = rt.embed([as_runtime_request(bodies[k]) for k in good])
    for row, k in enumerate(good):
        r = responses[k]
        assert r.status_code == 200, r.text
        np.testing.assert_array_equal(npy(r), expected.inputs_embeds[row : row + 1])
        assert int(r.headers["X-Dropped-Tokens"]) == expected.dropped_tokens[row]
        assert int(r.headers["X-Num-Tokens"]) == int(expected.attention_mask[row].sum())
        assert int(r.headers["X-Num-Images"]) == expected.images_per_request[row]
        assert r.headers["X-Inputs-Embeds-Shape"] == "1,1024,64"
    assert expected.dropped_tokens[good.index(7)] > 0
    batcher = httpx.get(f"{url}/healthz", timeout=10).json()["batcher"]
    assert batcher["batches"] < batcher["requests"]  # concurrent requests were batched together


def test_safetensors_on_request_and_unknown_accept_is_406(server, rt):
    url, _ = server
    b = body([{"type": "text", "text": "Look:"}, {"type": "image", "image_base64": b64(PHOTOS[3])}])
    st = post_all(url, [b], {"Accept": "application/x-safetensors"})[0]
    bad = post_all(url, [b], {"Accept": "text/html"})[0]
    assert st.status_code == 200 and st.headers["content-type"] == "application/x-safetensors"
    tensors = safetensors_load(st.content)
    expected = rt.embed([as_runtime_request(b)])
    assert sorted(tensors) == ["attention_mask", "image_attention_mask", "input_ids", "inputs_embeds"]
    for name, value in tensors.items():
        np.testing.assert_array_equal(value, getattr(expected, name))
    assert bad.status_code == 406 and "application/x-npy" in bad.json()["error"]


def test_refusals_name_the_reason(server):
    url, _ = server
    with httpx.Client(base_url=url, timeout=10) as client:
        def post(content: bytes):
            return client.post("/v1/embed", content=content, headers={"Content-Type": "application/json"})

        cases = [
            (post(b'{"messages": [ oops'), "not valid JSON"),
            (post(b"\xff\xfe\x00garbage"), "the body is not valid UTF-8: byte 0xff at offset 0"),
            (post(b"[" * 100_000), "the body nests arrays/objects deeper than 64 levels"),
            (post(b"[" * 65 + b"]" * 65), "the body nests arrays/objects deeper than 64 levels"),
            (post(b'[{"role": "user", "content": "hi"}]'), "must be a JSON object"),
            (client.post("/v1/embed", json=body([{"type": "image", "image": "/etc/passwd"}])), "image_base64"),
            (client.post("/v1/embed", json=body([{"type": "image", "image_base64": "abc!"}])), "not valid base64"),
            (client.post("/v1/embed", json=body([{"type": "video", "video": "x"}])), "message 0, item 0"),
            (client.post("/v1/embed", json={**body("hi"), "steam": True}), "unknown request keys"),
        ]
    for response, why in cases:
        assert response.status_code == 400, response.text
        assert why in response.json()["error"], response.json()


def test_oversize_body_is_413_before_it_is_read(server):
    url, _ = server
    port = int(url.rsplit(":", 1)[1])
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        s.sendall(b"POST /v1/embed HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
                  b"Content-Length: %d\r\n\r\n" % (32 * 2**20 + 1))
        head = s.recv(4096)
    assert head.startswith(b"HTTP/1.1 413"), head[:200]


def test_chunked_body_over_the_cap_is_413_and_full_queue_is_503(tiny_bundle):
    app = server_mod.create_app(tiny_bundle, max_body_bytes=1000)  # no lifespan: nothing is loaded

    class FullBatcher:
        async def embed(self, request):
            raise QueueFullError("batcher queue is full (2 requests waiting)")

    app.state.batcher = FullBatcher()

    async def chunks():
        for _ in range(3):
            yield b" " * 600

    async def go():
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://test") as client:
            return (await client.post("/v1/embed", content=chunks()),
                    await client.post("/v1/embed", json=body("hi")))

    over, full = asyncio.run(asyncio.wait_for(go(), 30))
    assert over.status_code == 413 and "limit of 1000" in over.json()["error"]
    assert full.status_code == 503 and full.headers["Retry-After"] == "1" and "full" in full.json()["error"]


def test_healthz_counts_cache_hits_and_the_example_client(server, rt):
    url, _ = server
    photo = (DATA / "retina.jpg").read_bytes()  # used by no other test here: a cold cache entry
    before = httpx.get(f"{url}/healthz", timeout=10).json()
    client = load_example("client")
    first, headers = client.embed(url, photo, "What is this?", timeout=30)
    second, _ = client.embed(url, photo, "And now?", timeout=30)
    after = httpx.get(f"{url}/healthz", timeout=10).json()
    assert after["backend"] == "onnxruntime" and after["precision"] == "fp32"
    assert after["cache"]["misses"] - before["cache"]["misses"] == 1
    assert after["cache"]["hits"] - before["cache"]["hits"] == 1
    assert after["batcher"]["requests"] - before["batcher"]["requests"] == 2
    expected = rt.embed([body([{"type": "image", "image": photo}, {"type": "text", "text": "What is this?"}])])
    np.testing.assert_array_equal(first, expected.inputs_embeds)
    assert headers["X-Num-Images"] == "1"
    with pytest.raises(RuntimeError, match=r"HTTP 400: image 0 \(message 0, item 0\): not a readable image"):
        client.embed(url, b"GIF89a nope", "x", timeout=30)
