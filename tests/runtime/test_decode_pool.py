"""runtime/decode_pool.py: results in order, every item once, and no wait on a busy pool."""

import threading
from concurrent.futures import ThreadPoolExecutor

from vlfront.runtime.decode_pool import decode_all


def test_results_in_order_each_item_decoded_once_by_caller_and_helpers():
    pool = ThreadPoolExecutor(max_workers=2)
    seen, threads, lock = [], set(), threading.Lock()
    release = threading.Barrier(2, timeout=10)  # the caller and one helper must both take an item

    def one(x):
        with lock:
            seen.append(x)
            threads.add(threading.get_ident())
        if x < 2:
            release.wait()
        return x * x

    try:
        assert decode_all(pool, list(range(20)), one, workers=2) == [x * x for x in range(20)]
    finally:
        pool.shutdown()
    assert sorted(seen) == list(range(20))
    assert len(threads) == 2  # caller + workers - 1 helpers, no more


def test_caller_finishes_alone_when_the_pool_is_busy():
    pool = ThreadPoolExecutor(max_workers=1)
    blocker = threading.Event()
    busy = pool.submit(blocker.wait, 10)  # another batch holds the only pool thread
    try:
        out = decode_all(pool, [1, 2, 3], lambda x: -x, workers=1)
        assert out == [-1, -2, -3]
        assert not busy.done()  # the caller did not wait for the pool
    finally:
        blocker.set()
        pool.shutdown()


def test_empty_and_single():
    pool = ThreadPoolExecutor(max_workers=2)
    try:
        assert decode_all(pool, [], str, workers=2) == []
        assert decode_all(pool, [7], str, workers=2) == ["7"]
    finally:
        pool.shutdown()
