"""examples/server.py against impolite clients: aborted uploads, wrong methods and content types.

An aborted upload is one log line, never a traceback; GET /v1/embed is a 405 JSON error with
Allow; a body declared as anything but JSON is a 415 naming the type; the server keeps serving.
"""

from __future__ import annotations

import importlib.util
import logging
import pathlib
import socket
import time

import httpx
import pytest
from serving import uvicorn_serving

EXAMPLES = pathlib.Path(__file__).resolve().parents[2] / "examples"
GOOD = {"messages": [{"role": "user", "content": "hello"}]}


def _load_server_module():
    spec = importlib.util.spec_from_file_location("vlfront_example_server_hostile", EXAMPLES / "server.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def server(tiny_bundle):
    app = _load_server_module().create_app(tiny_bundle, max_batch=4, max_wait_s=0.01)
    # log_config=None: uvicorn's loggers propagate, so the test sees every line it logs
    with uvicorn_serving(app, log_config=None, log_level="info") as (_, host, port):
        yield host, port


def test_aborted_upload_is_one_log_line_not_a_traceback(server, caplog):
    host, port = server
    caplog.set_level(logging.INFO)
    with socket.create_connection((host, port), timeout=10) as s:
        s.sendall(b"POST /v1/embed HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                  b"Content-Length: 100000\r\n\r\n" + b'{"messages": [' + b" " * 500)
        time.sleep(0.2)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and not any("disconnected" in r.getMessage() for r in caplog.records):
        time.sleep(0.05)
    lines = [r.getMessage() for r in caplog.records]
    ours = [m for m in lines if "disconnected during its upload" in m]
    assert len(ours) == 1, lines
    assert not any("Exception in ASGI application" in m or r.exc_info for m, r in zip(lines, caplog.records))
    r = httpx.post(f"http://{host}:{port}/v1/embed", json=GOOD, timeout=30)
    assert r.status_code == 200  # still serving


def test_get_is_405_with_allow(server):
    host, port = server
    r = httpx.get(f"http://{host}:{port}/v1/embed", timeout=10)
    assert r.status_code == 405 and r.headers["allow"] == "POST"
    assert r.json()["error"] == "method GET is not allowed on /v1/embed (allowed: POST)"


@pytest.mark.parametrize("ctype, status", [("text/plain", 415), ("application/x-www-form-urlencoded", 415),
                                           ("application/json; charset=utf-8", 200), ("APPLICATION/JSON", 200)])
def test_content_type(server, ctype, status):
    host, port = server
    import json

    r = httpx.post(f"http://{host}:{port}/v1/embed", content=json.dumps(GOOD), headers={"Content-Type": ctype},
                   timeout=30)
    assert r.status_code == status, r.text
    if status == 415:
        assert r.json()["error"] == f"Content-Type {ctype!r} is not supported; send the body as application/json"


# -- large bodies: parsed in parser processes, long texts cut there, at most max_large_bodies at once --

@pytest.fixture(scope="module")
def large_server(tiny_bundle):
    """The server with bodies over 64 KiB parsed out of process and one such body at a time."""
    app = _load_server_module().create_app(tiny_bundle, max_batch=4, max_wait_s=0.01,
                                           large_body_bytes=64 << 10, max_large_bodies=1, parse_workers=1)
    with uvicorn_serving(app) as (url, _, _):
        yield url, app
    assert all(p.poll() is not None for p in app.state.parsers._procs), "parser processes stopped with the app"


def test_a_large_body_is_answered_like_runtime_embed_of_the_whole_text(large_server, tiny_bundle):
    import base64
    import io

    import numpy as np
    import skimage

    from vlfront.runtime import Runtime

    url, app = large_server
    photo = (pathlib.Path(skimage.__file__).parent / "data" / "rocket.jpg").read_bytes()
    long_text = "A long question, 42 words or more? " * 9000  # 315,000 characters: cut in the parser
    body = {"messages": [{"role": "user", "content": [
        {"type": "image", "image_base64": base64.b64encode(photo).decode()},
        {"type": "text", "text": long_text}]}, {"role": "user", "content": long_text}]}
    parsed_before = app.state.parsers.parsed
    r = httpx.post(f"{url}/v1/embed", json=body, timeout=60)
    assert r.status_code == 200, r.text
    assert app.state.parsers.parsed == parsed_before + 1  # it went through a parser process
    with Runtime.load(tiny_bundle) as rt:
        want = rt.embed([{"messages": [{"role": "user", "content": [{"type": "image", "image": photo},
                                                                    {"type": "text", "text": long_text}]},
                                       {"role": "user", "content": long_text}]}])
    got = np.load(io.BytesIO(r.content), allow_pickle=False)
    assert np.array_equal(got, want.inputs_embeds)
    assert int(r.headers["x-dropped-tokens"]) == int(want.dropped_tokens[0]) > 0
    # NUL past the cut: the whole text reaches the runtime and gets its message; a bad body its own
    bad = httpx.post(f"{url}/v1/embed", json={"messages": [{"role": "user", "content": long_text + "\0"}]},
                     timeout=60)
    assert bad.status_code == 400
    assert bad.json()["error"].endswith(f"text has a NUL character at position {len(long_text)}; NUL is refused "
                                        "(C servers cut strings at NUL)")
    deep = httpx.post(f"{url}/v1/embed", content=b"[" * 100_000 + b"]" * 100_000, timeout=60)
    assert deep.status_code == 400 and deep.json()["error"] == "the body nests arrays/objects deeper than 64 levels"
    assert httpx.post(f"{url}/v1/embed", json=GOOD, timeout=30).status_code == 200


def test_large_bodies_over_the_limit_get_503_and_small_ones_pass(large_server):
    url, app = large_server
    host, port = url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=10) as s:  # holds the one large-body slot
        s.sendall(b"POST /v1/embed HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                  b"Content-Length: 200000\r\n\r\n" + b'{"messages": [' + b" " * 1000)
        deadline = time.monotonic() + 10
        while app.state.large_bodies.held == 0 and time.monotonic() < deadline:
            time.sleep(0.02)
        big = {"messages": [{"role": "user", "content": "word " * 30_000}]}
        r = httpx.post(f"{url}/v1/embed", json=big, timeout=30)
        assert r.status_code == 503 and r.headers["retry-after"] == "1"
        assert r.json()["error"].startswith("all 1 large-body slots are taken (bodies over 65536 bytes being received")
        assert httpx.post(f"{url}/v1/embed", json=GOOD, timeout=30).status_code == 200  # small bodies pass
    deadline = time.monotonic() + 10
    while app.state.large_bodies.held and time.monotonic() < deadline:  # the aborted upload gave it back
        time.sleep(0.02)
    assert app.state.large_bodies.held == 0
    assert httpx.post(f"{url}/v1/embed", json=big, timeout=60).status_code == 200
