"""examples/server.py --cache: two example-server replicas share visual tokens through one Redis."""

from __future__ import annotations

import base64
import importlib.util
import io
import pathlib

import numpy as np
import pytest

from triton_helpers import random_png

pytest.importorskip("redis", reason="the redis client comes with `make setup` (vlfront[triton])")
starlette_testclient = pytest.importorskip("starlette.testclient", reason="the serve extra is not installed")

SERVER = pathlib.Path(__file__).resolve().parents[2] / "examples" / "server.py"


def load_server():
    spec = importlib.util.spec_from_file_location("vlfront_example_server_i11", SERVER)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_an_image_through_one_server_is_a_hit_in_the_other(tiny_bundle, redis_server):
    server = load_server()
    body = {"messages": [{"role": "user", "content": [
        {"type": "image", "image_base64": base64.b64encode(random_png(900)).decode()},
        {"type": "text", "text": "shared"}]}]}
    outs, stats = [], []
    for _ in range(2):  # two apps = two replicas, each with its own Runtime and local LRU
        with starlette_testclient.TestClient(server.create_app(tiny_bundle, cache=redis_server.url)) as client:
            r = client.post("/v1/embed", json=body)
            assert r.status_code == 200, r.text
            outs.append(np.load(io.BytesIO(r.content)))
            stats.append(client.get("/healthz").json()["shared_cache"])
    assert stats[0]["misses"] == 1 and stats[0]["puts"] == 1
    assert stats[1]["hits"] == 1 and stats[1]["misses"] == 0
    assert np.array_equal(outs[0], outs[1])
