"""The Redis visual-token cache shared by replicas (runtime/shared_cache.py), against a real redis-server."""

from __future__ import annotations

import json
import logging
import shutil
import socket
import subprocess
import sys
import threading
import time

import numpy as np
import pytest

from vlfront.runtime import Runtime
from vlfront.runtime.shared_cache import SharedCache, SharedCacheError, open_shared_cache
from vlfront.runtime.triton.services import free_port

from triton_helpers import chat, random_png

redis = pytest.importorskip("redis", reason="the redis client comes with `make setup` (vlfront[triton])")

OUTPUTS = ("inputs_embeds", "input_ids", "attention_mask", "image_attention_mask", "pixel_values")


def same(a, b) -> None:
    for name in OUTPUTS:
        assert np.array_equal(getattr(a, name), getattr(b, name)), name
    assert a.dropped_tokens == b.dropped_tokens


@pytest.fixture(scope="module")
def reference(tiny_bundle):
    rt = Runtime.load(tiny_bundle, cache_bytes=0)
    yield rt
    rt.close()


@pytest.fixture(scope="module")
def pair(tiny_bundle):
    """Two replicas (separate Runtime objects, no local LRU so that every lookup reaches Redis)."""
    rts = [Runtime.load(tiny_bundle, cache_bytes=0) for _ in range(2)]
    yield rts
    for rt in rts:
        rt.close()


def attach(rt, url: str, **kwargs):
    """Point a loaded runtime at a Redis (what Runtime.load(cache=url) does at load)."""
    rt.shared_cache = open_shared_cache(url, rt)
    if kwargs:
        c = rt.shared_cache
        c.__init__(url, c._namespace, c._tokens_shape, c._pixels_shape, **kwargs)
    return rt


def values(client) -> dict:
    return {k: client.get(k) for k in client.scan_iter(match=b"vlfront:vt:*")}


def test_hit_in_another_process_is_bitwise_equal(tiny_bundle, redis_server, reference, photo_bytes):
    request = chat(photo_bytes[0], "what is this?")
    script = (f"import json, numpy as np, sys\nfrom vlfront.runtime import Runtime\n"
              f"from vlfront.runtime.triton.request import parse_request\n"
              f"rt = Runtime.load(sys.argv[1], cache=sys.argv[2])\n"
              f"out = rt.embed([parse_request(sys.stdin.buffer.read())])\n"
              f"np.save(sys.argv[3], out.inputs_embeds)\nprint(json.dumps(rt.stats()['shared_cache']))\n")
    from vlfront.runtime.triton import encode_request

    npy = tiny_bundle.parent / "replica_a.npy"
    a = subprocess.run([sys.executable, "-c", script, str(tiny_bundle), redis_server.url, str(npy)],
                       input=encode_request(request), capture_output=True, check=True)
    a_stats = json.loads(a.stdout.decode().strip().splitlines()[-1])
    assert a_stats["misses"] == 1 and a_stats["puts"] == 1

    b = Runtime.load(tiny_bundle, cache=redis_server.url)
    out = b.embed([request])
    assert b.stats()["shared_cache"]["hits"] == 1 and b.stats()["cache"]["hits"] == 0
    assert np.array_equal(out.inputs_embeds, np.load(npy))
    same(out, reference.embed([request]))
    # The local LRU stays in front: the next request for that image does not ask Redis. It keeps the
    # Redis value's own read-only views (no copy), so nothing a caller does can change them.
    entry = next(iter(b.cache._entries.values()))
    assert not entry.visual_tokens.flags.writeable and not entry.pixel_values.flags.writeable
    b.embed([request])
    assert b.stats()["shared_cache"]["hits"] == 1 and b.stats()["cache"]["hits"] == 1
    b.close()


@pytest.mark.parametrize("damage", ["flip", "truncate", "swap"])
def test_a_corrupted_value_is_a_miss_never_served(pair, redis_server, reference, damage):
    client = redis.Redis.from_url(redis_server.url)
    reqs = [chat(random_png(1), "one"), chat(random_png(2), "two")]
    a, b = (attach(rt, redis_server.url) for rt in pair)
    a.embed(reqs)
    (k1, v1), (k2, v2) = sorted(values(client).items())
    if damage == "flip":
        client.set(k1, v1[:-1] + bytes([v1[-1] ^ 1]))
    elif damage == "truncate":
        client.set(k1, v1[: len(v1) // 2])
    else:  # a valid value of another image, stored under this key
        client.set(k1, v2)
    out = b.embed(reqs)
    stats = b.stats()["shared_cache"]
    assert stats["corrupt"] == 1 and stats["hits"] == 1 and stats["misses"] == 1
    same(out, reference.embed(reqs))
    assert values(client)[k1] == v1  # the miss was embedded again and put back: healed


def test_two_bundles_never_share_tokens(tiny_bundle, redis_server, tmp_path):
    other = tmp_path / "other"
    shutil.copytree(tiny_bundle, other)
    manifest = other / "manifest.json"
    manifest.write_bytes(manifest.read_bytes() + b"\n")  # same content, another identity (sha256)
    request = chat(random_png(7), "x")
    a = Runtime.load(tiny_bundle, cache=redis_server.url)
    b = Runtime.load(other, cache=redis_server.url)
    a.embed([request])
    b.embed([request])
    assert b.stats()["shared_cache"]["hits"] == 0 and b.stats()["shared_cache"]["misses"] == 1
    assert len(values(redis.Redis.from_url(redis_server.url))) == 2
    a.close()
    b.close()


def test_key_mixes_precision_and_decode_mode():
    names = {SharedCache(f"redis://127.0.0.1:1/0", ns, (2, 2), (2, 2, 3))._name(b"k" * 32)
             for ns in (b"m|fp32|exact", b"m|int8|exact", b"m|fp32|fast", b"n|fp32|exact")}
    assert len(names) == 4


def test_redis_down_is_a_miss_and_one_log_line(pair, reference, caplog):
    url = f"redis://127.0.0.1:{free_port()}/0"  # nothing listens there
    rt = attach(pair[0], url)
    with caplog.at_level(logging.WARNING, logger="vlfront.runtime.shared_cache"):
        for i in range(5):
            same(rt.embed([chat(random_png(100 + i), "hi")]), reference.embed([chat(random_png(100 + i), "hi")]))
    stats = rt.stats()["shared_cache"]
    assert stats["hits"] == 0 and stats["errors"] >= 1
    assert stats["errors"] + stats["skipped"] >= 5  # every call failed or was skipped, none raised
    assert len([r for r in caplog.records if r.name == "vlfront.runtime.shared_cache"]) == 1


def test_a_slow_redis_costs_at_most_one_timeout(pair, reference):
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(8)  # accepts connections (kernel backlog), never answers
    url = f"redis://127.0.0.1:{listener.getsockname()[1]}/0"
    rt = attach(pair[0], url, timeout_s=0.2, retry_after_s=60)
    t0 = time.perf_counter()
    for i in range(4):
        same(rt.embed([chat(random_png(200 + i), "slow")]), reference.embed([chat(random_png(200 + i), "slow")]))
    elapsed = time.perf_counter() - t0
    stats = rt.stats()["shared_cache"]
    assert stats["errors"] == 1 and stats["skipped"] >= 3
    assert elapsed < 10  # one 0.2 s timeout, then Redis is skipped (not 8 timeouts of a hung server)
    listener.close()


def test_redis_killed_mid_load_loses_no_request(pair, redis_server, reference):
    rt = attach(pair[0], redis_server.url)
    requests = [chat(random_png(300 + i % 12), f"req {i}") for i in range(48)]
    results, errors = [None] * len(requests), []

    def worker(start: int) -> None:
        for i in range(start, len(requests), 4):
            try:
                results[i] = rt.embed([requests[i]])
            except Exception as e:  # noqa: BLE001 — counted, must stay empty
                errors.append(e)
            if i == 16:
                redis_server.kill()

    threads = [threading.Thread(target=worker, args=(s,)) for s in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert errors == []
    for request, out in zip(requests, results):
        same(out, reference.embed([request]))
    stats = rt.stats()["shared_cache"]
    assert stats["errors"] >= 1 and stats["puts"] >= 1


def test_bad_urls_are_refused_with_our_error(tiny_bundle):
    with pytest.raises(SharedCacheError, match="cache="):
        Runtime.load(tiny_bundle, cache="http://127.0.0.1:6379/0")
    for url in ("redis://", "redis://host:notaport/0", "redis://h:1/db", 6379):
        with pytest.raises(SharedCacheError, match="cache="):
            SharedCache(url, b"ns", (2, 2), (2, 2, 3))


class _Trickle:
    """A socket that hands out its bytes a few at a time (as a slow network does)."""

    def __init__(self, data: bytes, step: int):
        self.data, self.step = memoryview(data), step

    def recv(self, n: int) -> bytes:
        out, self.data = bytes(self.data[: min(n, self.step)]), self.data[min(n, self.step):]
        return out

    def recv_into(self, buf) -> int:
        k = min(len(buf), self.step, len(self.data))
        buf[:k] = self.data[:k]
        self.data = self.data[k:]
        return k


@pytest.mark.parametrize("step", [1, 7, 1 << 20])
def test_mget_reply_reader_reads_values_and_nils_in_any_chunking(step):
    from vlfront.runtime.shared_cache import _MgetReply

    big = bytes(range(256)) * 300
    reply = b"*4\r\n$3\r\nabc\r\n$-1\r\n_\r\n$%d\r\n%s\r\n" % (len(big), big)
    assert _MgetReply(_Trickle(reply, step), 1 << 20).read(4) == [b"abc", None, None, big]


@pytest.mark.parametrize("reply, reason", [
    (b"-ERR wrong\r\n", "Redis answered MGET with an error: ERR wrong"),
    (b"*2\r\n$1\r\na\r\n", "unexpected reply"),  # an array of another length
    (b"*1\r\n:5\r\n", "unexpected bulk header"),
    (b"*1\r\n$99999999\r\n", "unexpected bulk header"),  # over the bound on a value's size
    (b"*1\r\n$3\r\nabcd\r\n", "does not end in CRLF"),
    (b"*1\r\n$1\r\na\r\n+OK\r\n", "bytes after the MGET reply"),
    (b"*1\r\n" + b"x" * 100, "no CRLF"),
    (b"*1\r\n$5\r\nab", "closed the connection"),
])
def test_mget_reply_reader_refuses_what_mget_does_not_answer(reply, reason):
    from vlfront.runtime.shared_cache import _MgetReply

    with pytest.raises(ConnectionError, match=reason):
        _MgetReply(_Trickle(reply, 1 << 20), 1000).read(1)
