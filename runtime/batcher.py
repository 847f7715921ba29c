"""Dynamic batching for servers: many threads (or coroutines) submit single requests;
one worker thread groups them into batches of at most `max_batch`, waiting at
most `max_wait_s` for a batch to fill. One bad request fails alone. A request with
more than HEAVY_TEXT_CHARS characters of text runs alone on a second worker, so that
its text work never holds up a batch of small ones (the C++ Batcher does the same).
"""

from __future__ import annotations

import asyncio
import queue
import threading
import time
from concurrent.futures import Future

from vlfront.errors import QueueFullError, VlfrontError

_STOP = object()
HEAVY_TEXT_CHARS = 1 << 20


def is_heavy(request) -> bool:
    """More than HEAVY_TEXT_CHARS characters of text (str content and text items; anything malformed: no)."""
    messages = request.get("messages") if isinstance(request, dict) else request
    if not isinstance(messages, (list, tuple)):
        return False
    total = 0
    for message in messages:
        content = message.get("content") if isinstance(message, dict) else None
        items = [content] if isinstance(content, str) else content if isinstance(content, (list, tuple)) else ()
        for item in items:
            text = item if isinstance(item, str) else item.get("text") if isinstance(item, dict) else None
            if isinstance(text, str):
                total += len(text)
                if total > HEAVY_TEXT_CHARS:
                    return True
    return False


class Batcher:
    """Thread-safe dynamic batcher over `Runtime.embed_each`.

    Example:
        >>> with Batcher(rt, max_batch=8, max_wait_s=0.005) as b:
        ...     out = b.submit(request).result()   # EmbedOutput with B = 1
    """

    def __init__(self, runtime, max_batch: int = 8, max_wait_s: float = 0.005, max_queue: int = 256,
                 output_dtype: str | None = None):
        if max_batch < 1 or max_queue < 1 or max_wait_s < 0:
            raise VlfrontError(f"Batcher: max_batch={max_batch}, max_queue={max_queue} must be >= 1 "
                               f"and max_wait_s={max_wait_s} >= 0")
        self.runtime = runtime
        self.max_batch, self.max_wait_s, self.max_queue = max_batch, max_wait_s, max_queue
        self.output_dtype = output_dtype
        self._queue: queue.Queue = queue.Queue()
        self._heavy: queue.Queue = queue.Queue()
        self._waiting = 0  # in both queues, bounded by max_queue
        self._closed = False
        self._lock = threading.Lock()
        self.batches = 0
        self.requests = 0
        self._worker = threading.Thread(target=self._loop, name="vlfront-batcher", daemon=True)
        self._heavy_worker = threading.Thread(target=self._heavy_loop, name="vlfront-batcher-heavy", daemon=True)
        self._worker.start()
        self._heavy_worker.start()

    def submit(self, request) -> Future:
        """Queue one request; the Future resolves to an EmbedOutput (B=1) or raises its RequestError.

        Raises:
            QueueFullError: `max_queue` requests are already waiting.
            VlfrontError: the batcher is closed.
        """
        future: Future = Future()
        lane = self._heavy if is_heavy(request) else self._queue
        with self._lock:
            if self._closed:
                raise VlfrontError("Batcher is closed; create a new one")
            if self._waiting >= self.max_queue:
                raise QueueFullError(f"batcher queue is full ({self.max_queue} requests waiting); "
                                     "retry later or raise max_queue")
            self._waiting += 1
            lane.put_nowait((request, future))
        return future

    async def embed(self, request):
        """asyncio form of `submit`: `out = await batcher.embed(request)`."""
        return await asyncio.wrap_future(self.submit(request))

    def close(self, wait: bool = True) -> None:
        """Stop accepting requests; finish those already queued, then stop the worker."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
        self._queue.put(_STOP)
        self._heavy.put(_STOP)
        if wait:
            self._worker.join()
            self._heavy_worker.join()

    def __enter__(self) -> "Batcher":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def _loop(self) -> None:
        stopping = False
        while not stopping:
            item = self._queue.get()
            if item is _STOP:
                break
            batch = [item]
            deadline = time.monotonic() + self.max_wait_s
            while len(batch) < self.max_batch:
                timeout = deadline - time.monotonic()
                try:
                    item = self._queue.get(timeout=timeout) if timeout > 0 else self._queue.get_nowait()
                except queue.Empty:
                    break
                if item is _STOP:
                    stopping = True
                    break
                batch.append(item)
            self._run(batch)

    def _heavy_loop(self) -> None:
        while (item := self._heavy.get()) is not _STOP:
            self._run([item])

    def _run(self, batch: list) -> None:
        with self._lock:
            self._waiting -= len(batch)
        live = [(r, f) for r, f in batch if f.set_running_or_notify_cancel()]
        if not live:
            return
        try:
            results = self.runtime.embed_each([r for r, _ in live], output_dtype=self.output_dtype)
        except BaseException as e:  # noqa: BLE001 — a whole-batch failure (backend error, a library's
            # panic) reaches every caller of that batch; the worker lives on for the next one.
            results = [e if isinstance(e, Exception) else VlfrontError(f"batch failed: {type(e).__name__}: {e}")
                       ] * len(live)
        self.batches += 1
        self.requests += len(live)
        for (_, future), result in zip(live, results):
            if isinstance(result, BaseException):
                future.set_exception(result)
            else:
                future.set_result(result)
