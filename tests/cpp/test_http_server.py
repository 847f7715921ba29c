"""The C++ HTTP server example (its HTTP front + the batcher) on 127.0.0.1 with concurrent clients."""

from __future__ import annotations

import base64
import io
import json
import pathlib
import subprocess
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
import skimage

from vlfront.runtime import Runtime as PyRuntime

DATA = pathlib.Path(skimage.__file__).parent / "data"
PHOTOS = ["rocket.jpg", "astronaut.png", "coffee.png", "chelsea.png"]


@pytest.fixture(scope="module")
def server(cpp_http_server_bin, tiny_bundle):
    proc = subprocess.Popen([str(cpp_http_server_bin), "--bundle", str(tiny_bundle), "--port", "0", "--threads", "1",
                             "--max-batch", "4", "--max-wait-ms", "5", "--max-body-mb", "4"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    line = proc.stdout.readline()
    if not line.startswith("listening on "):
        proc.kill()
        pytest.fail(f"server did not start: {line!r} {proc.stderr.read()}")
    yield line.split()[-1]
    proc.terminate()
    assert proc.wait(timeout=30) == 0


def post(url, body: bytes, accept: str | None = None):
    req = urllib.request.Request(url + "/v1/embed", data=body, method="POST",
                                 headers={"Content-Type": "application/json", **({"Accept": accept} if accept else {})})
    try:
        with urllib.request.urlopen(req, timeout=60) as r:
            return r.status, dict(r.headers), r.read()
    except urllib.error.HTTPError as e:
        return e.code, dict(e.headers), e.read()


def request(i: int) -> dict:
    photo = DATA / PHOTOS[i % len(PHOTOS)]
    return {"messages": [{"role": "user", "content": [
        {"type": "image", "image_base64": base64.b64encode(photo.read_bytes()).decode()},
        {"type": "text", "text": f"Request {i}: what is in this picture?"}]}]}


def test_concurrent_requests_match_the_python_runtime(server, tiny_bundle):
    n = 16
    with ThreadPoolExecutor(n) as pool:
        answers = list(pool.map(lambda i: post(server, json.dumps(request(i)).encode()), range(n)))
    with PyRuntime.load(tiny_bundle) as py:
        for i, (status, headers, body) in enumerate(answers):
            assert status == 200, body
            got = np.load(io.BytesIO(body))
            req = request(i)
            item = req["messages"][0]["content"][0]
            req["messages"][0]["content"][0] = {"type": "image", "image": base64.b64decode(item["image_base64"])}
            want = py.embed([req["messages"]]).inputs_embeds
            assert got.shape == want.shape
            assert np.linalg.norm(got - want) <= 1e-5 * np.linalg.norm(want)
            assert headers["X-Num-Images"] == "1" and headers["X-Inputs-Embeds-Shape"] == f"1,1024,{want.shape[2]}"
    with urllib.request.urlopen(server + "/healthz", timeout=10) as r:
        health = json.loads(r.read())
    assert health["batcher"]["requests"] == n
    assert health["batcher"]["batches"] < n  # concurrent requests were batched
    assert health["cache"]["hits"] > 0       # 4 photos, 16 requests


def test_safetensors_answer(server):
    status, headers, body = post(server, json.dumps(request(0)).encode(), accept="application/x-safetensors")
    assert status == 200 and headers["Content-Type"] == "application/x-safetensors"
    n = int.from_bytes(body[:8], "little")
    header = json.loads(body[8:8 + n])
    assert header["inputs_embeds"]["dtype"] == "F32" and header["input_ids"]["shape"] == [1, 1024]
    assert header["image_attention_mask"]["data_offsets"][1] == len(body) - 8 - n


@pytest.mark.parametrize("body, accept, status, needle", [
    (b"{not json", None, 400, "not valid JSON"),
    (b"[]", None, 400, "must be a JSON object"),
    (json.dumps({"messages": [{"role": "user", "content": [{"type": "image", "image": "/etc/passwd"}]}]}).encode(),
     None, 400, "file paths and URLs are not accepted"),
    (json.dumps({"messages": [{"role": "robot", "content": "hi"}]}).encode(), None, 400, "role 'robot'"),
    (json.dumps({"messages": [{"role": "user", "content": [
        {"type": "image", "image_base64": base64.b64encode(b"garbage").decode()}]}]}).encode(), None, 400,
     "not a readable image"),
    (json.dumps({"messages": [{"role": "user", "content": "hi"}]}).encode(), "text/html", 406, "cannot answer"),
    (b"x" * (5 << 20), None, 413, "over the limit"),
])
def test_refusals(server, body, accept, status, needle):
    got, headers, raw = post(server, body, accept)
    assert got == status
    answer = json.loads(raw)
    assert needle in answer["error"] and answer["index"] == 0, answer
