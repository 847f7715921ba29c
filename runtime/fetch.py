"""An opt-in, guarded fetcher for remote image URLs (OpenAI `image_url` items in a server).

Off unless a server is started with a domain allowlist (examples/server.py
--fetch-allow-domain). For every connection, the first and each redirect:

* the URL must be http(s) (http only when allowed), without user:password@,
  and its host must be on the allowlist ("example.com" is that host only,
  ".example.com" also its subdomains);
* the host is resolved once, every address is checked, and the socket is
  connected to a checked address by us (no second lookup a DNS rebinding could
  answer differently): addresses that are not globally routable are refused
  (private, loopback, link-local incl. the 169.254.169.254 metadata service,
  shared, multicast, reserved; IPv4-mapped IPv6 is checked as IPv4), unless a
  network is allowed explicitly (tests allow 127.0.0.1/32);
* redirects only to the same host (and not https -> http), at most max_redirects;
* a connect and per-read timeout, plus a deadline for the whole download
  that closes the socket however slowly the server trickles;
* at most max_bytes: refused from Content-Length before reading, and counted
  while streaming (chunked or lying servers).

Errors are FetchError (a RequestError) naming the rule, never the client's URL
beyond its allowed host.
"""

from __future__ import annotations

import http.client
import ipaddress
import socket
import ssl
import threading
import time
from dataclasses import dataclass
from urllib.parse import urljoin, urlsplit

from vlfront.errors import FetchError

MiB = 1 << 20
_CHUNK = 64 * 1024


@dataclass(frozen=True)
class FetchPolicy:
    """What the fetcher may do.

    Attributes:
        allow_domains: hosts allowed ("images.example.com"; ".example.com" adds subdomains).
        allow_http: also plain http:// (default: https only).
        allow_networks: networks allowed although not global, e.g. ("127.0.0.1/32",) in tests.
        timeout_s: connect timeout and timeout of each read.
        deadline_s: the whole download, headers and redirects included.
        max_bytes: largest body.
        max_redirects: same-host redirects followed.
        ca_file: PEM file of CAs to trust instead of the system's (https).
    """

    allow_domains: tuple[str, ...]
    allow_http: bool = False
    allow_networks: tuple[str, ...] = ()
    timeout_s: float = 5.0
    deadline_s: float = 15.0
    max_bytes: int = 16 * MiB
    max_redirects: int = 3
    ca_file: str | None = None


class Fetcher:
    """Downloads remote images under a FetchPolicy.

    Args:
        policy: the rules (see FetchPolicy).
        resolver: `socket.getaddrinfo`-like function (tests inject one).

    Example:
        >>> f = Fetcher(FetchPolicy(allow_domains=("images.example.com",)))
        >>> data = f.fetch("https://images.example.com/cat.jpg")
    """

    def __init__(self, policy: FetchPolicy, resolver=socket.getaddrinfo):
        if not policy.allow_domains:
            raise ValueError("a Fetcher needs at least one allowed domain")
        self.policy = policy
        self._domains = tuple(d.lower().rstrip(".") for d in policy.allow_domains)
        self._networks = tuple(ipaddress.ip_network(n) for n in policy.allow_networks)
        self._resolve = resolver

    def fetch(self, url: str, where: str = "image_url", index: int | None = None) -> bytes:
        """The body of `url` (HTTP 200), following same-host redirects.

        Raises:
            FetchError: a rule refused the URL, an address or a redirect; the server failed,
                timed out or sent more than max_bytes.
        """
        p = self.policy
        deadline = time.monotonic() + p.deadline_s
        first = self._target(url, where, index)
        target = first
        for hop in range(p.max_redirects + 1):
            status, location, body = self._get(target, deadline, where, index)
            if status == 200:
                return body
            if status in (301, 302, 303, 307, 308) and location is not None:
                if hop == p.max_redirects:
                    raise FetchError(f"{where}: more than {p.max_redirects} redirects", index)
                nxt = self._target(urljoin(target.url, location), where, index)
                if nxt.host != first.host or (first.scheme == "https" and nxt.scheme != "https"):
                    raise FetchError(f"{where}: {first.host} redirected to another host or scheme; "
                                     "redirects are followed only to the same host", index)
                target = nxt
                continue
            raise FetchError(f"{where}: {target.host} answered HTTP {status}; the image could not be fetched", index)
        raise FetchError(f"{where}: more than {p.max_redirects} redirects", index)  # pragma: no cover

    # -- rules ------------------------------------------------------------------

    def _target(self, url: str, where: str, index) -> "_Target":
        try:
            parts = urlsplit(url)
            port = parts.port
        except ValueError:
            raise FetchError(f"{where}: the URL is malformed", index) from None
        scheme = parts.scheme.lower()
        if scheme not in ("https", "http") or (scheme == "http" and not self.policy.allow_http):
            allowed = "http or https" if self.policy.allow_http else "https"
            raise FetchError(f"{where}: the fetcher takes {allowed} URLs only", index)
        if parts.username is not None or parts.password is not None:
            raise FetchError(f"{where}: URLs with user:password@ are refused", index)
        host = (parts.hostname or "").rstrip(".")
        if not host or not self._host_allowed(host):
            raise FetchError(f"{where}: the URL's host is not on the fetcher's allowlist "
                             f"(--fetch-allow-domain)", index)
        path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        return _Target(url, scheme, host, port or (443 if scheme == "https" else 80), path)

    def _host_allowed(self, host: str) -> bool:
        for d in self._domains:
            if d.startswith("."):
                if host == d[1:] or host.endswith(d):
                    return True
            elif host == d:
                return True
        return False

    def _addresses(self, t: "_Target", where: str, index) -> list[tuple]:
        try:
            infos = self._resolve(t.host, t.port, type=socket.SOCK_STREAM)
        except (OSError, UnicodeError) as e:
            raise FetchError(f"{where}: cannot resolve {t.host} ({type(e).__name__})", index) from None
        if not infos:
            raise FetchError(f"{where}: {t.host} has no address", index)
        for info in infos:
            ip = ipaddress.ip_address(info[4][0].split("%")[0])
            if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped:
                ip = ip.ipv4_mapped
            if any(ip in n for n in self._networks):
                continue
            if not ip.is_global or ip.is_multicast:
                raise FetchError(f"{where}: {t.host} resolves to {ip}, which is not a public address "
                                 "(private, loopback, link-local or reserved); refused", index)
        return infos

    # -- one request ------------------------------------------------------------

    def _get(self, t: "_Target", deadline: float, where: str, index) -> tuple[int, str | None, bytes]:
        p = self.policy
        infos = self._addresses(t, where, index)
        sock = self._connect(infos, t, deadline, where, index)
        expired = threading.Event()

        def expire():
            expired.set()
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

        timer = threading.Timer(max(0.0, deadline - time.monotonic()), expire)
        timer.daemon = True
        timer.start()
        try:
            conn = http.client.HTTPConnection(t.host, t.port, timeout=p.timeout_s)
            conn.sock = sock  # connected to the checked address: http.client never resolves again
            conn.request("GET", t.path, headers={"User-Agent": "vlfront-fetch", "Accept": "image/*",
                                                 "Accept-Encoding": "identity"})
            resp = conn.getresponse()
            if resp.status != 200:
                location = resp.getheader("Location")
                resp.close()
                return resp.status, location, b""
            declared = resp.getheader("Content-Length", "")
            if declared.isdigit() and int(declared) > p.max_bytes:
                raise FetchError(f"{where}: {t.host} sends {declared} bytes, over the limit of {p.max_bytes} "
                                 "(--fetch-max-mb)", index)
            chunks, size = [], 0
            while True:
                chunk = resp.read1(_CHUNK)
                if not chunk:
                    break
                size += len(chunk)
                if size > p.max_bytes:
                    raise FetchError(f"{where}: {t.host} sent more than the limit of {p.max_bytes} bytes "
                                     "(--fetch-max-mb)", index)
                chunks.append(chunk)
            if expired.is_set():  # the deadline shut the socket: what came is not the whole image
                raise OSError("deadline")
            if declared.isdigit() and size != int(declared):
                raise FetchError(f"{where}: {t.host} closed the connection after {size} of {declared} bytes", index)
            return 200, None, b"".join(chunks)
        except FetchError:
            raise
        except (OSError, http.client.HTTPException) as e:
            if expired.is_set():
                raise FetchError(f"{where}: {t.host} took longer than {p.deadline_s:g} s "
                                 "(--fetch-deadline-s)", index) from None
            if isinstance(e, (socket.timeout, TimeoutError)):
                raise FetchError(f"{where}: {t.host} sent nothing for {p.timeout_s:g} s "
                                 "(--fetch-timeout-s)", index) from None
            raise FetchError(f"{where}: fetching from {t.host} failed ({type(e).__name__})", index) from None
        finally:
            timer.cancel()
            sock.close()

    def _connect(self, infos, t: "_Target", deadline: float, where: str, index) -> socket.socket:
        p = self.policy
        last: Exception | None = None
        for family, socktype, proto, _, addr in infos:
            sock = socket.socket(family, socktype, proto)
            sock.settimeout(max(0.01, min(p.timeout_s, deadline - time.monotonic())))
            try:
                sock.connect(addr)
                if t.scheme == "https":
                    ctx = ssl.create_default_context(cafile=p.ca_file)  # verifies the chain and the host name
                    sock = ctx.wrap_socket(sock, server_hostname=t.host)
                sock.settimeout(p.timeout_s)
                return sock
            except (OSError, ssl.SSLError) as e:
                sock.close()
                last = e
        kind = "timed out" if isinstance(last, (socket.timeout, TimeoutError)) else type(last).__name__
        raise FetchError(f"{where}: cannot connect to {t.host} ({kind})", index)


@dataclass(frozen=True)
class _Target:
    url: str
    scheme: str
    host: str
    port: int
    path: str
