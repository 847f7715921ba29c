"""Two Triton replicas sharing one Redis: an image embedded through replica A is a Redis hit in replica B."""

from __future__ import annotations

import concurrent.futures as cf

import numpy as np
import pytest

from triton_helpers import assert_same, chat, expect, infer, random_png, triton_or_skip
from vlfront.runtime import Runtime
from vlfront.runtime.triton import RepositoryOptions, TritonServer, encode_request, write_repository

redis = pytest.importorskip("redis", reason="the redis client comes with `make setup` (vlfront[triton])")


@pytest.fixture(scope="module")
def replicas(tiny_bundle, module_redis, tmp_path_factory):
    triton_or_skip()
    repo = tmp_path_factory.mktemp("triton-redis") / "repo"
    write_repository(tiny_bundle, repo, RepositoryOptions(max_batch=4, cache=module_redis.url, threads=1))
    with TritonServer(repo) as a, TritonServer(repo) as b:
        yield a, b


@pytest.fixture(scope="module")
def reference(tiny_bundle):
    rt = Runtime.load(tiny_bundle, cache_bytes=0)
    yield rt
    rt.close()


def redis_stats(url: str) -> tuple[int, int]:
    info = redis.Redis.from_url(url).info("stats")
    return int(info["keyspace_hits"]), int(info["keyspace_misses"])


def test_an_image_through_replica_a_is_a_hit_in_replica_b(replicas, module_redis, reference):
    a, b = replicas
    chats = [chat(random_png(500 + i), f"replica {i}") for i in range(4)]
    hits0, misses0 = redis_stats(module_redis.url)
    for c in chats:
        assert_same(infer(a, encode_request(c), "http"), expect(reference, c))
    hits1, misses1 = redis_stats(module_redis.url)
    assert (hits1 - hits0, misses1 - misses0) == (0, 4)  # A: 4 misses, 4 puts
    for c in chats:  # new text, same images: B has never seen them, Redis has
        c2 = [{"role": "user", "content": [c[0]["content"][0], {"type": "text", "text": "again"}]}]
        assert_same(infer(b, encode_request(c2), "grpc"), expect(reference, c2))
    hits2, misses2 = redis_stats(module_redis.url)
    assert (hits2 - hits1, misses2 - misses1) == (4, 0)


def test_redis_killed_mid_load_loses_no_triton_request(replicas, module_redis, reference):
    a, b = replicas
    chats = [chat(random_png(600 + i), f"load {i}") for i in range(24)]
    with cf.ThreadPoolExecutor(6) as pool:
        futures = [pool.submit(infer, (a, b)[i % 2], encode_request(c), "http") for i, c in enumerate(chats)]
        futures[8].result()
        module_redis.kill()  # the rest run against a dead Redis
        results = [f.result() for f in futures]  # any failure raises here
    for c, got in zip(chats, results):
        assert_same(got, expect(reference, c))
