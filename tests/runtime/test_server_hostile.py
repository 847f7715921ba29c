"""examples/server.py against impolite clients: aborted uploads, wrong methods and content types.

An aborted upload is one log line, never a traceback; GET /v1/embed is a 405 JSON error with
Allow; a body declared as anything but JSON is a 415 naming the type; the server keeps serving.
"""

from __future__ import annotations

import importlib.util
import logging
import pathlib
import socket
import threading
import time

import httpx
import pytest
import uvicorn

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
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    # log_config=None: uvicorn's loggers propagate, so the test sees every line it logs
    srv = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_config=None, log_level="info",
                                        timeout_graceful_shutdown=5))
    thread = threading.Thread(target=srv.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not srv.started and thread.is_alive() and time.monotonic() < deadline:
        time.sleep(0.02)
    assert srv.started
    try:
        yield "127.0.0.1", port
    finally:
        srv.should_exit = True
        thread.join(15)
        sock.close()


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
