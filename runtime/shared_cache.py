"""A visual-token cache shared by every replica, in Redis, behind the local LRU.

    rt = Runtime.load("build/default", cache="redis://10.0.0.5:6379/0")

Keys bind an image's digest to what produced its tokens: the bundle's identity (sha256 of its
manifest.json), the precision and the decode mode, so two bundles (or an int8 and an fp32
replica of one bundle) never share tokens. A value carries a sha256 over its key and payload;
a value that does not check (truncated, corrupted, written under another key) is a miss, never
served. Redis bounds the size (run it with `maxmemory` + `maxmemory-policy allkeys-lru`) and every
entry has a TTL.

Redis is an optimisation, never a dependency of a request: every call has a short timeout; a
failed or slow call is a miss plus one log line (at most one per `log_every_s`), and after a
failure Redis is left alone for `retry_after_s`, so a dead Redis costs no latency.
"""

from __future__ import annotations

import hashlib
import logging
import threading
import time
import urllib.parse

import numpy as np

from vlfront.errors import VlfrontError

log = logging.getLogger("vlfront.runtime.shared_cache")

MAGIC = b"VLVT1"  # format of a value: MAGIC | sha256(key | payload) | payload
_DIGEST = 32


class SharedCacheError(VlfrontError, ValueError):
    """A `cache=` URL that cannot be used (wrong scheme, bad host/port/db, redis client missing)."""


class SharedCache:
    """Visual tokens + pixels by image key, in Redis, for every replica serving one bundle.

    Args:
        url: "redis://host:port/db" (db defaults to 0; "rediss://" for TLS; a password as
            "redis://:password@host:port/db").
        namespace: what produced the tokens (see `namespace_for`), mixed into every key.
        tokens_shape, pixels_shape: shapes of one image's visual_tokens (float32) and pixels (uint8).
        ttl_s: lifetime of an entry in Redis.
        timeout_s: limit on each Redis call (connect, send, receive).
        retry_after_s: after a failed call, Redis is not asked again for this long.
        log_every_s: at most one warning per this many seconds.

    Raises:
        SharedCacheError: a URL that is not redis:// or rediss://, or no `redis` package.
    """

    def __init__(self, url: str, namespace: bytes, tokens_shape: tuple[int, int], pixels_shape: tuple[int, ...], *,
                 ttl_s: float = 24 * 3600, timeout_s: float = 0.25, retry_after_s: float = 1.0,
                 log_every_s: float = 30.0):
        self.url = url
        self._client = _client(url, timeout_s)
        self._namespace = namespace
        self._tokens_shape, self._pixels_shape = tuple(tokens_shape), tuple(pixels_shape)
        self._tokens_bytes = int(np.prod(tokens_shape)) * 4
        self._size = self._tokens_bytes + int(np.prod(pixels_shape))
        self.ttl_s, self.retry_after_s, self.log_every_s = ttl_s, retry_after_s, log_every_s
        self._lock = threading.Lock()
        self._down_until = 0.0
        self._last_log = -1e9
        self._unlogged = 0
        self.hits = self.misses = self.corrupt = self.errors = self.skipped = self.puts = 0

    # --- public -----------------------------------------------------------------
    def get_many(self, keys: list[bytes]) -> dict[bytes, tuple[np.ndarray, np.ndarray]]:
        """(visual_tokens, pixel_values) for the keys Redis holds intact; one round trip; never raises."""
        if not keys:
            return {}
        names = [self._name(k) for k in keys]
        values = self._call("GET", lambda: self._mget(names))
        found = {}
        for key, name, value in zip(keys, names, values or [None] * len(keys)):
            entry = self._unpack(name, value) if value is not None else None
            if entry is not None:
                found[key] = entry
        with self._lock:
            self.hits += len(found)
            self.misses += len(keys) - len(found)
        return found

    def put_many(self, entries: dict[bytes, tuple[np.ndarray, np.ndarray]]) -> None:
        """Store entries with the TTL in one round trip; never raises (a failed put is only logged)."""
        if not entries:
            return

        def send():
            pipe = self._client.pipeline(transaction=False)
            for key, (tokens, pixels) in entries.items():
                name = self._name(key)
                pipe.set(name, self._pack(name, tokens, pixels), px=int(self.ttl_s * 1000))
            return pipe.execute()

        if self._call("SET", send) is not None:
            with self._lock:
                self.puts += len(entries)

    def stats(self) -> dict:
        with self._lock:
            return {"url": _redact(self.url), "hits": self.hits, "misses": self.misses, "corrupt": self.corrupt,
                    "errors": self.errors, "skipped": self.skipped, "puts": self.puts}

    def close(self) -> None:
        try:
            self._client.close()
        except Exception:  # noqa: BLE001 — closing a dead connection must not fail a shutdown
            pass

    # --- values -----------------------------------------------------------------
    def _name(self, key: bytes) -> bytes:
        return b"vlfront:vt:" + hashlib.sha256(self._namespace + b"\0" + bytes(key)).hexdigest().encode()

    def _pack(self, name: bytes, tokens: np.ndarray, pixels: np.ndarray) -> bytes:
        payload = (np.ascontiguousarray(tokens, dtype="<f4").tobytes()
                   + np.ascontiguousarray(pixels, dtype=np.uint8).tobytes())
        digest = hashlib.sha256(name)
        digest.update(payload)
        return MAGIC + digest.digest() + payload

    def _unpack(self, name: bytes, value: bytes):
        head = len(MAGIC) + _DIGEST
        payload = memoryview(value)[head:]  # no copies of the ~0.75 MB value before it checks
        digest = hashlib.sha256(name)
        digest.update(payload)
        if (len(value) != head + self._size or not value.startswith(MAGIC)
                or digest.digest() != value[len(MAGIC):head]):
            with self._lock:
                self.corrupt += 1
            self._warn(f"shared cache: a value of {len(value)} bytes under {name.decode()} does not check "
                       "(corrupted, truncated or foreign); treated as a miss")
            return None
        tokens = np.frombuffer(payload, "<f4", count=self._tokens_bytes // 4).reshape(self._tokens_shape)
        pixels = np.frombuffer(payload, np.uint8, offset=self._tokens_bytes).reshape(self._pixels_shape)
        tokens = tokens.astype(np.float32, copy=False)
        tokens.flags.writeable = pixels.flags.writeable = False  # views of the received value, as a cache's are
        return tokens, pixels

    # --- Redis calls ------------------------------------------------------------
    def _mget(self, names: list[bytes]) -> list:
        """MGET, the reply read straight off the socket into one buffer per value.

        redis-py's reader copies a 0.75 MB value 4-5 times on its way out (0.66-0.77 ms per cold GET
        here; this, 0.35-0.42 ms). The connection and everything about it (connect, AUTH, SELECT, TLS,
        the socket timeout) stay redis-py's; any error or a reply other than MGET's drops the connection,
        so a half-read one is never reused.
        """
        pool = self._client.connection_pool
        conn = pool.get_connection()
        try:
            conn.send_command("MGET", *names)
            return _MgetReply(conn._sock, max_value_bytes=16 * (len(MAGIC) + _DIGEST + self._size) + (1 << 20)
                              ).read(len(names))
        except BaseException:
            conn.disconnect()
            raise
        finally:
            pool.release(conn)

    def _call(self, what: str, fn):
        """fn() or None when Redis is down, slow or failing (then skip it for retry_after_s)."""
        now = time.monotonic()
        with self._lock:
            if now < self._down_until:
                self.skipped += 1
                return None
        try:
            return fn()
        except Exception as e:  # noqa: BLE001 — any client error (refused, timeout, OOM, protocol) is a miss
            with self._lock:
                self.errors += 1
                self._down_until = time.monotonic() + self.retry_after_s
            self._warn(f"shared cache {_redact(self.url)}: {what} failed ({type(e).__name__}: {e}); serving "
                       f"without it for {self.retry_after_s:g} s (requests are not affected)")
            return None

    def _warn(self, message: str) -> None:
        with self._lock:
            now = time.monotonic()
            if now - self._last_log < self.log_every_s:
                self._unlogged += 1
                return
            suppressed, self._unlogged, self._last_log = self._unlogged, 0, now
        log.warning("%s%s", message, f" [{suppressed} similar messages suppressed]" if suppressed else "")


class _MgetReply:
    """The reply to MGET of n keys, read from a socket: `*n`, then n bulk strings (`$len`, the bytes, CRLF)
    or nils (RESP2 `$-1`; RESP3, redis-py 8's default, `_`). Values come back as bytearrays (a value that does not check is the caller's
    business); anything else raises SharedCacheReplyError."""

    def __init__(self, sock, max_value_bytes: int):
        self.sock, self.max_value_bytes = sock, max_value_bytes
        self.pending = bytearray()  # received, not yet consumed

    def read(self, n: int) -> list:
        head = self._line()
        if head.startswith(b"-"):
            raise SharedCacheReplyError(f"Redis answered MGET with an error: {head[1:200].decode('utf-8', 'replace')}")
        if head != b"*%d" % n:
            raise SharedCacheReplyError(f"unexpected reply {bytes(head[:40])!r} to an MGET of {n} keys")
        values = []
        for _ in range(n):
            line = self._line()
            if line == b"$-1" or line == b"_":  # a missing key: RESP2's nil bulk string, RESP3's null
                values.append(None)
                continue
            size = int(line[1:]) if line.startswith(b"$") and line[1:].isdigit() else -1
            if not 0 <= size <= self.max_value_bytes:
                raise SharedCacheReplyError(f"unexpected bulk header {bytes(line[:40])!r} in an MGET reply "
                                            f"(values here are at most {self.max_value_bytes} bytes)")
            values.append(self._exact(size))
        if self.pending:
            raise SharedCacheReplyError(f"{len(self.pending)} bytes after the MGET reply")
        return values

    def _recv(self) -> None:
        chunk = self.sock.recv(1 << 16)
        if not chunk:
            raise ConnectionError("Redis closed the connection")
        self.pending += chunk

    def _line(self) -> bytearray:
        while (end := self.pending.find(b"\r\n")) < 0:
            if len(self.pending) > 64:
                raise SharedCacheReplyError(f"no CRLF in the first {len(self.pending)} bytes of a reply line")
            self._recv()
        line = self.pending[:end]
        del self.pending[: end + 2]
        return line

    def _exact(self, size: int) -> bytearray:
        out = bytearray(size + 2)
        have = min(len(self.pending), size + 2)
        out[:have] = self.pending[:have]
        del self.pending[:have]
        view = memoryview(out)
        while have < size + 2:
            got = self.sock.recv_into(view[have:])
            if not got:
                raise ConnectionError("Redis closed the connection")
            have += got
        view.release()
        if out[size:] != b"\r\n":
            raise SharedCacheReplyError("a bulk string of an MGET reply does not end in CRLF")
        del out[size:]
        return out


class SharedCacheReplyError(VlfrontError, ConnectionError):
    """A Redis reply that is not what the command returns (the connection is dropped; a miss)."""


def namespace_for(bundle_root, precision: str, decode: str) -> bytes:
    """What makes tokens of one image interchangeable: sha256(manifest.json), precision, decode mode."""
    import pathlib

    manifest = hashlib.sha256((pathlib.Path(bundle_root) / "manifest.json").read_bytes()).hexdigest()
    return f"{manifest}|{precision}|{decode}".encode()


def open_shared_cache(url: str | None, runtime) -> SharedCache | None:
    """The shared cache for a Runtime (None when `url` is None); keyed to its bundle, precision, decode mode."""
    if url is None:
        return None
    cfg = runtime.config
    namespace = namespace_for(runtime.bundle.root, runtime.runner.precision, getattr(runtime, "decode", "exact"))
    return SharedCache(url, namespace, (cfg.tokens_per_image, cfg.hidden_size), (cfg.image_size, cfg.image_size, 3))


def _client(url: str, timeout_s: float):
    if not isinstance(url, str):
        raise SharedCacheError(f"cache={url!r}: give a URL like 'redis://127.0.0.1:6379/0'")
    parts = urllib.parse.urlsplit(url)
    if parts.scheme not in ("redis", "rediss") or not parts.hostname:
        raise SharedCacheError(f"cache={_redact(url)!r}: only 'redis://host:port/db' (or rediss://) is supported")
    try:
        port = parts.port or 6379
        db = int(parts.path.lstrip("/") or 0)
    except ValueError as e:
        raise SharedCacheError(f"cache={_redact(url)!r}: bad port or db number ({e})") from None
    try:
        import redis
        from redis.backoff import NoBackoff
        from redis.retry import Retry
    except ImportError as e:
        raise SharedCacheError(f"cache='redis://...' needs the redis client ({e}): pip install 'vlfront[triton]'"
                               ) from None
    # No retries: a failed call is a miss, and the next request tries again after retry_after_s.
    return redis.Redis(host=parts.hostname, port=port, db=db, password=parts.password, username=parts.username or None,
                       ssl=parts.scheme == "rediss", socket_timeout=timeout_s, socket_connect_timeout=timeout_s,
                       retry=Retry(NoBackoff(), 0), health_check_interval=0, protocol=2,  # RESP2: no push messages
                       single_connection_client=False, max_connections=64)


def _redact(url: str) -> str:
    parts = urllib.parse.urlsplit(url) if isinstance(url, str) else None
    if parts is None or not parts.password:
        return str(url)
    return url.replace(f":{parts.password}@", ":***@", 1)
