"""Real servers on loopback for the Triton and shared-cache tests: redis-server, tritonserver (nvidia-pytriton)."""

from __future__ import annotations

import pytest

from vlfront.runtime.triton import services


def _redis_or_skip():
    try:
        return services.RedisServer()
    except services.ServiceError as e:
        pytest.skip(str(e))


@pytest.fixture
def redis_server():
    """A fresh redis-server (maxmemory 256 MB, allkeys-lru, no persistence) per test; stopped afterwards."""
    server = _redis_or_skip().start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def module_redis():
    server = _redis_or_skip().start()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def photo_bytes() -> list[bytes]:
    from triton_helpers import photos

    return photos()
