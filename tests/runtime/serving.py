"""examples/server.py under uvicorn in a thread, on a loopback socket bound to a free port (tests only)."""

from __future__ import annotations

import contextlib
import socket
import threading
import time

import uvicorn


@contextlib.contextmanager
def uvicorn_serving(app, **config):
    """Serve `app` until the block ends; yields (url, host, port). `config`: more uvicorn.Config options."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))  # the socket is handed to uvicorn: no race for the port
    port = sock.getsockname()[1]
    srv = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, **{"log_level": "warning", **config},
                                        timeout_graceful_shutdown=5))
    thread = threading.Thread(target=srv.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not srv.started and thread.is_alive() and time.monotonic() < deadline:
        time.sleep(0.02)
    assert srv.started, "uvicorn did not start within 30 s"
    try:
        yield f"http://127.0.0.1:{port}", "127.0.0.1", port
    finally:
        srv.should_exit = True
        thread.join(15)
        sock.close()
    assert not thread.is_alive(), "uvicorn did not shut down within 15 s"
