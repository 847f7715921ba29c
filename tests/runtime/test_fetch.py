"""The opt-in fetcher against a local HTTP server on 127.0.0.1 (loopback allowed explicitly)."""

from __future__ import annotations

import http.server
import pathlib
import socket
import threading
import time

import pytest
import skimage

from vlfront.errors import FetchError, RequestError
from vlfront.runtime.fetch import Fetcher, FetchPolicy

PNG = (pathlib.Path(skimage.__file__).parent / "data" / "coffee.png").read_bytes()
LOOPBACK = ("127.0.0.1/32",)


class Handler(http.server.BaseHTTPRequestHandler):
    hosts: list[str] = []

    def log_message(self, *args):
        pass

    def _send(self, status=200, body=b"", headers=()):
        self.send_response(status)
        for k, v in headers:
            self.send_header(k, v)
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self):
        Handler.hosts.append(self.headers.get("Host", ""))
        port = self.server.server_address[1]
        routes = {
            "/ok.png": lambda: self._send(200, PNG, [("Content-Length", str(len(PNG)))]),
            "/same-host": lambda: self._send(302, headers=[("Location", "/ok.png")]),
            "/other-host": lambda: self._send(302, headers=[("Location", f"http://localhost:{port}/ok.png")]),
            "/loop": lambda: self._send(302, headers=[("Location", "/loop")]),
            "/missing": lambda: self._send(404, b"no"),
            "/big-declared": lambda: self._send(200, b"x" * 10, [("Content-Length", str(10 << 20))]),
            "/big-streamed": self._big_streamed,
            "/slow-body": self._slow_body,
            "/silent": lambda: time.sleep(3),
        }
        routes.get(self.path, lambda: self._send(404))()

    def _big_streamed(self):  # no Content-Length: only counting while streaming can stop it
        self.send_response(200)
        self.end_headers()
        try:
            for _ in range(64):
                self.wfile.write(b"y" * 65536)
        except OSError:
            pass

    def _slow_body(self):  # a byte every 0.2 s: each read is quick, the whole is not
        self.send_response(200)
        self.send_header("Content-Length", "1000")
        self.end_headers()
        try:
            for _ in range(1000):
                self.wfile.write(b"z")
                self.wfile.flush()
                time.sleep(0.2)
        except OSError:
            pass


@pytest.fixture(scope="module")
def server():
    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    srv.daemon_threads = True
    thread = threading.Thread(target=srv.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{srv.server_address[1]}"
    srv.shutdown()
    srv.server_close()


def fetcher(**kw) -> Fetcher:
    kw.setdefault("allow_domains", ("127.0.0.1",))
    kw.setdefault("allow_http", True)
    kw.setdefault("allow_networks", LOOPBACK)
    return Fetcher(FetchPolicy(**kw))


def test_fetches_an_allowed_url_and_follows_a_same_host_redirect(server):
    assert fetcher().fetch(f"{server}/ok.png") == PNG
    assert fetcher().fetch(f"{server}/same-host") == PNG


def test_connects_to_the_checked_address_itself(server):
    """A made-up name resolved by our resolver only: the socket goes to that address, Host names the host."""
    port = int(server.rsplit(":", 1)[1])
    calls = []

    def resolver(host, port_, type=0):
        calls.append(host)
        return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", ("127.0.0.1", port_))]

    f = Fetcher(FetchPolicy(allow_domains=(".example.test",), allow_http=True, allow_networks=LOOPBACK), resolver)
    Handler.hosts.clear()
    assert f.fetch(f"http://img.example.test:{port}/same-host") == PNG
    assert calls == ["img.example.test", "img.example.test"]  # resolved and checked on every connection
    assert Handler.hosts == [f"img.example.test:{port}"] * 2


def test_rebinding_between_connections_is_refused(server):
    port = int(server.rsplit(":", 1)[1])
    answers = iter(["127.0.0.1", "10.0.0.7"])

    def resolver(host, port_, type=0):
        return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", (next(answers), port_))]

    f = Fetcher(FetchPolicy(allow_domains=("img.example.test",), allow_http=True, allow_networks=LOOPBACK), resolver)
    with pytest.raises(FetchError, match="resolves to 10.0.0.7, which is not a public address"):
        f.fetch(f"http://img.example.test:{port}/same-host")


@pytest.mark.parametrize("address", ["127.0.0.1", "10.1.2.3", "192.168.0.1", "172.16.5.4", "169.254.169.254",
                                     "100.64.0.1", "0.0.0.0", "::1", "fe80::1", "fd00:ec2::254",
                                     "::ffff:127.0.0.1", "224.0.0.1"])
def test_private_loopback_link_local_and_metadata_addresses_are_refused(address):
    def resolver(host, port, type=0):
        family = socket.AF_INET6 if ":" in address else socket.AF_INET
        return [(family, socket.SOCK_STREAM, 6, "", (address, port))]

    f = Fetcher(FetchPolicy(allow_domains=("cdn.example.test",)), resolver)
    t0 = time.monotonic()
    with pytest.raises(FetchError, match="not a public address"):
        f.fetch("https://cdn.example.test/a.png")
    assert time.monotonic() - t0 < 1.0  # refused before any connection


def test_loopback_needs_the_explicit_allowance(server):
    with pytest.raises(FetchError, match="resolves to 127.0.0.1, which is not a public address"):
        fetcher(allow_networks=()).fetch(f"{server}/ok.png")


def test_redirect_to_another_host_is_refused(server):
    f = fetcher(allow_domains=("127.0.0.1", "localhost"))
    with pytest.raises(FetchError, match="redirected to another host"):
        f.fetch(f"{server}/other-host")


def test_redirect_loop_is_bounded(server):
    with pytest.raises(FetchError, match="more than 3 redirects"):
        fetcher().fetch(f"{server}/loop")


@pytest.mark.parametrize("path, match", [("/big-declared", "sends 10485760 bytes, over the limit of 1048576"),
                                         ("/big-streamed", "sent more than the limit of 1048576 bytes")])
def test_oversize_is_refused(server, path, match):
    with pytest.raises(FetchError, match=match):
        fetcher(max_bytes=1 << 20).fetch(f"{server}{path}")


def test_slow_server_hits_the_deadline(server):
    t0 = time.monotonic()
    with pytest.raises(FetchError, match="took longer than 1 s"):
        fetcher(deadline_s=1.0, timeout_s=5.0).fetch(f"{server}/slow-body")
    assert time.monotonic() - t0 < 3.0


def test_silent_server_hits_the_read_timeout(server):
    t0 = time.monotonic()
    with pytest.raises(FetchError, match="sent nothing for 0.5 s"):
        fetcher(timeout_s=0.5).fetch(f"{server}/silent")
    assert time.monotonic() - t0 < 2.5


@pytest.mark.parametrize("url, match", [
    ("https://evil.example/x.png", "not on the fetcher's allowlist"),
    ("http://127.0.0.1.evil.example/x.png", "not on the fetcher's allowlist"),
    ("http://user:pw@127.0.0.1/x.png", "user:password@"),
    ("ftp://127.0.0.1/x.png", "http or https URLs only"),
    ("http://[::1/x.png", "malformed"),
])
def test_url_rules(url, match):
    with pytest.raises(FetchError, match=match) as e:
        fetcher().fetch(url, where="message 0, item 1", index=2)
    assert isinstance(e.value, RequestError) and str(e.value).startswith("request 2: message 0, item 1: ")
    assert "evil" not in str(e.value) and "pw" not in str(e.value)


def test_https_only_by_default(server):
    with pytest.raises(FetchError, match="takes https URLs only"):
        fetcher(allow_http=False).fetch(f"{server}/ok.png")


def test_not_found(server):
    with pytest.raises(FetchError, match="answered HTTP 404"):
        fetcher().fetch(f"{server}/missing")


def test_fuzzed_urls_only_ever_raise_fetch_error():
    """Whatever the string, the fetcher answers with its own error (here every address is private)."""
    import random

    rng = random.Random(0)
    pieces = ["http://", "https://", "HTTPS://", "ftp://", "//", "cdn.example.test", "CDN.EXAMPLE.TEST.", "[::1]",
              "[", "]", ":", ":0", ":99999", ":443", "@", "user:pw@", "/", "/a.png", "?q=1", "#f", "%00", "%2e",
              "é", "\x00", " ", "\n", "\\", "..", "xn--", ".example.test", "[fe80::1%25eth0]"]

    def resolver(host, port, type=0):
        return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", ("10.0.0.1", port or 443))]

    f = Fetcher(FetchPolicy(allow_domains=(".example.test", "::1"), allow_http=True), resolver)
    for _ in range(2000):
        url = "".join(rng.choice(pieces) for _ in range(rng.randint(1, 8)))
        with pytest.raises(FetchError):
            f.fetch(url)


@pytest.fixture(scope="module")
def tls_server(tmp_path_factory):
    """HTTPS on 127.0.0.1 with a self-signed certificate for that address (made by the openssl CLI)."""
    import shutil
    import ssl
    import subprocess

    if not shutil.which("openssl"):
        pytest.skip("the openssl command is not installed (it makes the test certificate)")
    d = tmp_path_factory.mktemp("tls")
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(d / "key.pem"),
                    "-out", str(d / "cert.pem"), "-days", "1", "-subj", "/CN=127.0.0.1",
                    "-addext", "subjectAltName=IP:127.0.0.1"], check=True, capture_output=True)
    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(d / "cert.pem", d / "key.pem")
    srv.socket = ctx.wrap_socket(srv.socket, server_side=True)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    yield f"https://127.0.0.1:{srv.server_address[1]}", str(d / "cert.pem")
    srv.shutdown()
    srv.server_close()


def test_https_verifies_the_certificate(tls_server):
    url, cert = tls_server
    with pytest.raises(FetchError, match=r"cannot connect to 127.0.0.1 \(SSLCertVerificationError\)"):
        fetcher(allow_http=False).fetch(f"{url}/ok.png")
    assert fetcher(allow_http=False, ca_file=cert).fetch(f"{url}/same-host") == PNG
