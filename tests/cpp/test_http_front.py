"""The C++ example server's HTTP front (runtime/cpp/examples/http_front.cc): limits and protocol.

Each limit of docs/runtime.md ("Server") is hit on loopback with raw sockets: 405/404/415 from the
head alone, 413 for declared and chunked bodies, 408 for a stalled upload, 431 for huge heads,
503 with Retry-After beyond --max-connections; keep-alive, pipelining and 100-continue work.
"""

from __future__ import annotations

import gzip
import json
import socket
import subprocess
import time

import pytest

REQ = json.dumps({"messages": [{"role": "user", "content": "Hello there"}]}).encode()


@pytest.fixture(scope="module")
def server(cpp_http_server_bin, tiny_bundle):
    proc = subprocess.Popen([str(cpp_http_server_bin), "--bundle", str(tiny_bundle), "--port", "0", "--threads", "1",
                             "--max-body-mb", "1", "--request-timeout-s", "1", "--idle-timeout-s", "1",
                             "--max-connections", "16"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    line = proc.stdout.readline()
    if not line.startswith("listening on "):
        proc.kill()
        pytest.fail(f"server did not start: {line!r} {proc.stderr.read()}")
    yield int(line.rsplit(":", 1)[1])
    proc.terminate()
    assert proc.wait(timeout=30) == 0


def connect(port: int) -> socket.socket:
    return socket.create_connection(("127.0.0.1", port), timeout=10)


class Reader:
    """HTTP answers read off one socket, bytes past an answer kept for the next (pipelining)."""

    def __init__(self, sock: socket.socket):
        self.sock, self.buf = sock, b""

    def _more(self) -> None:
        chunk = self.sock.recv(65536)
        assert chunk, f"connection closed before an answer: {self.buf[:200]!r}"
        self.buf += chunk

    def answer(self) -> tuple[int, dict, bytes]:
        while b"\r\n\r\n" not in self.buf:
            self._more()
        head, _, self.buf = self.buf.partition(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        headers = {k.strip().lower(): v.strip() for k, v in (line.split(":", 1) for line in lines[1:])}
        n = int(headers.get("content-length", 0))
        while len(self.buf) < n:
            self._more()
        body, self.buf = self.buf[:n], self.buf[n:]
        return int(lines[0].split()[1]), headers, body


def read_answer(s: socket.socket) -> tuple[int, dict, bytes]:
    return Reader(s).answer()


def exchange(port: int, raw: bytes) -> tuple[int, dict, bytes]:
    with connect(port) as s:
        s.sendall(raw)
        return read_answer(s)


def post(body: bytes = REQ, content_type: str | None = "application/json", extra: str = "") -> bytes:
    ct = f"Content-Type: {content_type}\r\n" if content_type else ""
    return (f"POST /v1/embed HTTP/1.1\r\nHost: x\r\n{ct}Content-Length: {len(body)}\r\n{extra}\r\n").encode() + body


def closed(s: socket.socket, within: float) -> bool:
    s.settimeout(within)
    try:
        while s.recv(65536):
            pass
        return True
    except (TimeoutError, socket.timeout):
        return False
    except ConnectionResetError:
        return True


@pytest.mark.parametrize("raw, status, needle, allow", [
    (b"GET /v1/embed HTTP/1.1\r\nHost: x\r\n\r\n", 405, "method GET is not allowed on /v1/embed (allowed: POST)",
     "POST"),
    (b"PUT /healthz HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\n{}", 405, "(allowed: GET, HEAD)", "GET, HEAD"),
    (b"HEAD /v1/embed HTTP/1.1\r\nHost: x\r\n\r\n", 405, "(allowed: POST)", "POST"),
    (b"GET /nope HTTP/1.1\r\nHost: x\r\n\r\n", 404, "no such route", None),
    (post(content_type="text/plain"), 415,
     "Content-Type 'text/plain' is not supported; send the body as application/json", None),
    (post(content_type="x" * 70), 415, "Content-Type '" + "x" * 60 + "'... is not supported", None),
    (post(gzip.compress(REQ), extra="Content-Encoding: gzip\r\n"), 400, "the body is not valid UTF-8: byte 0x8b", None),
    (post(extra="Accept: text/html\r\n"), 406, "cannot answer", None),
    (b"POST /v1/embed HTTP/1.1\r\nContent-Type: application/json\r\nContent-Length: 5000000\r\n\r\n", 413,
     "the body has 5000000 bytes, over the limit of 1048576 (--max-body-mb)", None),
    (post(b'{"messages":[{"role":"user","content":"\xc3\x28"}]}'), 400,
     "the body is not valid UTF-8: byte 0xc3 at offset 39", None),
    (post(b'{"messages":' + b"[" * 65 + b"]" * 65 + b"}"), 400, "nests arrays/objects deeper than 64 levels", None),
    (post(b'{"messages": [}'), 400, "the body is not valid JSON: ", None),
    (post(b'{"messages": [{"role": "user", "content": "hi", "x": 8e61084}]}'), 400,  # fuzz finding: was a 500
     "the body is not valid JSON: a number is out of range", None),
    (b"POST /v1/embed HTTP/1.1\r\nContent-Length: 2\r\nTransfer-Encoding: chunked\r\n\r\n", 400,
     "both Content-Length and Transfer-Encoding", None),
    (b"POST /v1/embed HTTP/1.1\r\nTransfer-Encoding: gzip\r\n\r\n", 501, "other than 'chunked'", None),
    (b"POST /v1/embed HTTP/1.1\r\nContent-Length: -1\r\n\r\n", 400, "not a decimal number", None),
    (b"GET /healthz HTTP/2.0\r\n\r\n", 505, "HTTP/1.0 and HTTP/1.1", None),
    (b"GET /healthz HTTP/1.1\r\nX: " + b"a" * 20000 + b"\r\n\r\n", 431, "over 16384 bytes", None),
    (b"GET /healthz HTTP/1.1\r\n" + b"X: a\r\n" * 101 + b"\r\n", 431, "more than 100 header fields", None),
    (b"GET /healthz HTTP/1.1\r\nNo colon here\r\n\r\n", 400, "is not 'Name: value'", None),
    (b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03\r\n\r\n", 400, "request line", None),  # TLS hello
])
def test_refusals(server, raw, status, needle, allow):
    got, headers, body = exchange(server, raw)
    answer = json.loads(body)
    assert got == status and needle in answer["error"] and answer["index"] == 0, (got, answer)
    assert headers["content-type"] == "application/json"
    if allow:
        assert headers["allow"] == allow


def test_head_healthz_has_headers_only(server):
    with connect(server) as s:
        s.sendall(b"HEAD /healthz HTTP/1.1\r\n\r\nGET /healthz HTTP/1.1\r\n\r\n")
        data = b""
        while data.count(b"HTTP/1.1 200") < 2 or not data.endswith(b"}"):
            chunk = s.recv(65536)
            assert chunk
            data += chunk
    head, rest = data.split(b"\r\n\r\n", 1)
    assert b"Content-Length: " in head and rest.startswith(b"HTTP/1.1 200")  # no body after the HEAD answer


def test_charset_utf8_accepted_and_keep_alive(server):
    with connect(server) as s:
        for ct in ("application/json", "Application/JSON; charset=UTF-8", None):  # none: taken as JSON
            s.sendall(post(content_type=ct))
            status, headers, body = read_answer(s)
            assert status == 200 and headers["connection"] == "keep-alive" and body.startswith(b"\x93NUMPY")


def test_chunked_body_equals_the_plain_one(server):
    plain = exchange(server, post())[2]
    chunks = b"".join(b"%x\r\n%s\r\n" % (len(REQ[i:i + 7]), REQ[i:i + 7]) for i in range(0, len(REQ), 7))
    raw = (b"POST /v1/embed HTTP/1.1\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n"
           + chunks + b"0\r\nX-Trailer: 1\r\n\r\n")
    status, _, body = exchange(server, raw)
    assert status == 200 and body == plain


def test_chunked_body_over_the_limit_is_413_without_reading_it_all(server):
    with connect(server) as s:
        s.sendall(b"POST /v1/embed HTTP/1.1\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n")
        sent = 0
        try:
            for _ in range(64):  # up to 64 MiB; the limit is 1 MiB
                s.sendall(b"100000\r\n" + b"[" * (1 << 20) + b"\r\n")
                sent += 1
        except OSError:
            pass
        status, headers, body = read_answer(s)
    assert status == 413 and "over the limit of 1048576 bytes" in json.loads(body)["error"]
    assert headers["connection"] == "close" and sent < 64


def test_pipelined_requests_and_100_continue(server):
    with connect(server) as s:
        s.sendall(post() + b"GET /healthz HTTP/1.1\r\n\r\n")
        reader = Reader(s)
        first, second = reader.answer(), reader.answer()
    assert first[0] == 200 and first[2].startswith(b"\x93NUMPY")
    assert second[0] == 200 and "batcher" in json.loads(second[2])
    with connect(server) as s:
        s.sendall(post(b"", extra="Expect: 100-continue\r\n").replace(b"Length: 0", b"Length: %d" % len(REQ)))
        assert s.recv(64).startswith(b"HTTP/1.1 100 Continue\r\n\r\n")
        s.sendall(REQ)
        assert read_answer(s)[0] == 200


def test_stalled_uploads_get_408_and_do_not_delay_others(server):
    """12 uploads stalled in the head or the body (the issue's probe held every cpp-httplib thread)."""
    stalled = [connect(server) for _ in range(12)]
    try:
        for i, s in enumerate(stalled):
            raw = post()
            s.sendall(raw[: 20 if i % 2 else len(raw) - 10])  # in the request line, or 10 bytes short
        t0 = time.monotonic()
        assert exchange(server, post())[0] == 200
        for s in stalled:  # answered while every stalled one was still waiting for its 408
            s.setblocking(False)
            with pytest.raises(BlockingIOError):
                s.recv(1)
            s.setblocking(True)
            s.settimeout(10)
        for s in stalled:
            status, headers, body = read_answer(s)
            assert status == 408 and "did not arrive within 1 s" in json.loads(body)["error"], body
            assert headers["connection"] == "close" and closed(s, 5)
        assert time.monotonic() - t0 < 10
    finally:
        for s in stalled:
            s.close()


def test_idle_keep_alive_connection_is_closed(server):
    with connect(server) as s:
        t0 = time.monotonic()
        assert closed(s, 5) and time.monotonic() - t0 < 4


def test_connections_beyond_the_limit_get_503(server):
    idle = [connect(server) for _ in range(16)]
    try:
        time.sleep(0.2)
        with connect(server) as s:
            status, headers, body = read_answer(s)
        assert status == 503 and headers["retry-after"] == "1" and "--max-connections" in json.loads(body)["error"]
    finally:
        for s in idle:
            s.close()
    time.sleep(0.3)
    assert exchange(server, b"GET /healthz HTTP/1.1\r\n\r\n")[0] == 200
