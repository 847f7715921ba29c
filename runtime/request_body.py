"""Request bodies for a server: JSON bytes -> a runtime request, here or in worker processes.

`parse_body` is what examples/server.py does with a POST /v1/embed body: strict UTF-8 and
depth-bounded JSON (json_guard), the request's outline, base64 image items decoded to bytes.

`ParserPool` runs it in worker processes (`python -m vlfront.runtime.request_body`) for bodies
over a few MiB. Why: json.loads of a 30 MiB body holds the GIL ~25 ms, and the runtime's checks of
a 30 MiB text (UTF-8, NUL, NFC) hold it again; in one process that stalls every other request's
event loop, batcher and decode threads (docs/runtime.md, "Large bodies"). A worker also sends back
only what the runtime can use of a long text: `cut_texts` replaces a text longer than `keep`
characters by a CutText of its first `keep` NFC characters that knows the whole length, after
checking the whole text the way the runtime would (lone surrogates, NUL). encode_prefix gives the
same tokens, counts and errors on the cut as on the whole (runtime/text_prefix.py, prefix_chars),
so the answer is the one the whole body would get.

Workers are trusted children: their answers are pickles of plain data (dict, list, str, bytes,
CutText). A worker that dies is replaced; the body it held is answered with a ParserError.
"""

from __future__ import annotations

import base64
import os
import pickle
import queue
import struct
import subprocess
import sys
import threading
import unicodedata
from concurrent.futures import Future

from vlfront.errors import RequestError, VlfrontError
from vlfront.runtime import json_guard
from vlfront.runtime.text_prefix import FULL_CHARS, CutText, prefix_chars

BODY_HINT = 'the body must be a JSON object {"messages": [...], "add_generation_prompt": true}'
_LEN = struct.Struct("<Q")


class BodyRefused(VlfrontError, ValueError):
    """A body refused before it reaches the runtime: HTTP status and the whole reason."""

    def __init__(self, status: int, message: str, headers: dict | None = None):
        super().__init__(message)
        self.status, self.headers = status, headers


class ParserError(VlfrontError):
    """A parser worker could not answer (it exited or could not be started); the body is not at fault."""


def parse_body(body) -> dict:
    """JSON body -> a runtime request (image_base64 items decoded to bytes); the runtime checks the rest.

    Args:
        body: the bytes, or a list holding them alone, which is emptied: the bytes are then freed
            once decoded, before the JSON is parsed (a 30 MiB body then peaks at 2x, not 3x).

    Raises:
        BodyRefused: not UTF-8, too deep, not JSON, or not a {"messages": [...]} object (status 400).
        RequestError: an image item that is not exactly {"type": "image", "image_base64": <base64>}.
    """
    try:  # UTF-8 and depth <= 64, worded as the C++ server
        text = json_guard.decode(body.pop() if isinstance(body, list) else body, "the body")
        request = json_guard.loads_text(text, "the body")
    except json_guard.JsonRefused as e:
        raise BodyRefused(400, str(e)) from None
    del text
    if not isinstance(request, dict) or not isinstance(request.get("messages"), list):
        raise BodyRefused(400, BODY_HINT)
    for m, message in enumerate(request["messages"]):
        if isinstance(message, dict) and isinstance(message.get("content"), list):
            message["content"] = [_image_item(item, m, i) for i, item in enumerate(message["content"])]
    return request


def _image_item(item, m: int, i: int):
    """{"type": "image", "image_base64": s} -> {"type": "image", "image": bytes}; other items pass as they are."""
    if not isinstance(item, dict) or item.get("type") != "image":
        return item
    where = f"message {m}, item {i}"
    if set(item) != {"type", "image_base64"} or not isinstance(item["image_base64"], str):
        raise RequestError(f"{where}: an image item here is exactly {{\"type\": \"image\", \"image_base64\": "
                           f"\"<base64 of the encoded file>\"}}, got keys {sorted(map(str, item))}; file paths "
                           "and URLs are not accepted (the server never opens files named by a client)")
    try:
        data = base64.b64decode(item["image_base64"], validate=True)
    except ValueError as e:
        raise RequestError(f"{where}: image_base64 is not valid base64 ({e})") from None
    return {"type": "image", "image": data}


def keep_for(tokenizer, max_text_tokens: int) -> int | None:
    """How many characters of a long text `cut_texts` keeps for this tokenizer, or None (no cuts):
    at least what encode_prefix can read (text_prefix.prefix_chars), over FULL_CHARS, and only for a
    tokenizer whose cuts are exact (`prefix_exact`)."""
    if not getattr(tokenizer, "prefix_exact", False):
        return None
    return max(prefix_chars(max_text_tokens, tokenizer.max_token_bytes), FULL_CHARS + 1)


def cut_texts(request: dict, keep: int) -> int:
    """Replace each text of `request` longer than `keep` characters by a CutText; return how many.

    Only a text the runtime would accept whole is cut (valid Unicode, no NUL); others stay whole for
    the runtime's own message. `keep` comes from `keep_for`.
    """
    cut = 0

    def shorter(text):
        nonlocal cut
        if not isinstance(text, str) or len(text) <= keep or "\0" in text:
            return text
        try:
            text.encode("utf-8")
        except UnicodeEncodeError:
            return text
        full = unicodedata.normalize("NFC", text)
        prefix = full[:keep]
        if len(full) <= keep or not unicodedata.is_normalized("NFC", prefix):
            return text
        cut += 1
        return CutText(prefix, len(full))

    for message in request.get("messages", ()):
        if not isinstance(message, dict):
            continue
        content = message.get("content")
        if isinstance(content, str):
            message["content"] = shorter(content)
        elif isinstance(content, list):
            for item in content:
                if isinstance(item, dict) and item.get("type") == "text" and "text" in item:
                    item["text"] = shorter(item["text"])
    return cut


def _answer(box: list, keep: int | None):
    try:
        request = parse_body(box)
        if keep:
            cut_texts(request, keep)
        return ("ok", request)
    except BodyRefused as e:
        return ("refused", e.status, str(e))
    except RequestError as e:
        return ("request", e.reason)


def _trim() -> None:
    """Give freed memory back to the system (glibc keeps big freed blocks in its heap)."""
    try:
        import ctypes

        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass


def _read_exactly(stream, n: int) -> bytes | None:
    data = stream.read(n)  # a buffered stream: n bytes, or fewer only at the end of the stream
    return data if data is not None and len(data) == n else None


def worker_main(keep: int | None) -> None:
    """The worker: length-prefixed bodies on stdin, length-prefixed pickled answers on stdout."""
    stdin, stdout = sys.stdin.buffer, sys.stdout.buffer
    while True:
        head = _read_exactly(stdin, _LEN.size)
        if head is None:
            return
        box = [_read_exactly(stdin, _LEN.unpack(head)[0])]
        if box[0] is None:
            return
        answer = pickle.dumps(_answer(box, keep), protocol=pickle.HIGHEST_PROTOCOL)
        stdout.write(_LEN.pack(len(answer)))
        stdout.write(answer)
        stdout.flush()
        del answer
        _trim()


class ParserPool:
    """`workers` parser processes; `submit(chunks)` parses one body in one of them.

    Example:
        >>> pool = ParserPool(workers=1, keep=keep_for(rt.tokenizer, rt.config.max_text_tokens))
        >>> request = pool.submit([body]).result()      # or raises BodyRefused / RequestError
    """

    def __init__(self, workers: int = 1, keep: int | None = None):
        if workers < 1:
            raise VlfrontError(f"ParserPool: workers={workers} must be >= 1")
        if keep is not None and keep <= FULL_CHARS:
            raise VlfrontError(f"ParserPool: keep={keep} must be over FULL_CHARS={FULL_CHARS} (or None: no cuts)")
        self.keep = keep
        self.parsed = self.restarts = 0
        self._idle: queue.Queue = queue.Queue()
        self._closed = False
        self._procs: list[subprocess.Popen] = []
        self._lock = threading.Lock()
        for _ in range(workers):
            self._idle.put(self._spawn())

    def _spawn(self) -> subprocess.Popen:
        cmd = [sys.executable, "-m", "vlfront.runtime.request_body"] + ([f"--keep={self.keep}"] if self.keep else [])
        env = dict(os.environ, OMP_NUM_THREADS="1")
        try:
            proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, env=env)  # buffered: whole reads
        except OSError as e:
            raise ParserError(f"cannot start a body parser process ({e})") from None
        with self._lock:
            self._procs.append(proc)
        return proc

    def submit(self, chunks: list) -> Future:
        """Parse the body made of `chunks` (bytes objects, consumed: the list is emptied as it is sent)."""
        future: Future = Future()
        threading.Thread(target=self._run, args=(chunks, future), name="vlfront-body-parser", daemon=True).start()
        return future

    async def parse(self, chunks: list) -> dict:
        """asyncio form of `submit`."""
        import asyncio

        return await asyncio.wrap_future(self.submit(chunks))

    def _run(self, chunks: list, future: Future) -> None:
        proc = self._idle.get()
        if proc is None:  # no worker could be restarted: wake the next waiter too
            self._idle.put(None)
            future.set_exception(ParserError("no body parser process is running (restarts failed)"))
            return
        try:
            if self._closed:
                raise ParserError("the body parser pool is closed")
            answer = self._ask(proc, chunks)
        except ParserError as e:
            future.set_exception(e)
            proc = self._replace(proc)
            return
        finally:
            if proc is not None:
                self._idle.put(proc)
        with self._lock:
            self.parsed += 1
        if answer[0] == "ok":
            future.set_result(answer[1])
        elif answer[0] == "request":
            future.set_exception(RequestError(answer[1]))
        else:
            future.set_exception(BodyRefused(answer[1], answer[2]))

    def _ask(self, proc: subprocess.Popen, chunks: list):
        try:
            proc.stdin.write(_LEN.pack(sum(map(len, chunks))))
            while chunks:
                proc.stdin.write(chunks.pop(0))  # the GIL is released while the pipe takes it
            proc.stdin.flush()
            head = _read_exactly(proc.stdout, _LEN.size)
            data = head and _read_exactly(proc.stdout, _LEN.unpack(head)[0])
        except (OSError, ValueError) as e:
            raise ParserError(f"the body parser process failed ({type(e).__name__}: {e}); retry") from None
        if not data:
            raise ParserError(f"the body parser process exited (code {proc.poll()}); retry")
        return pickle.loads(data)

    def _replace(self, proc: subprocess.Popen) -> subprocess.Popen | None:
        """A fresh worker for a failed one (None when none can be started: the pool shrinks by one)."""
        proc.kill()
        proc.wait()
        with self._lock:
            self._procs.remove(proc)
        self.restarts += 1
        if self._closed:
            return None
        try:
            return self._spawn()
        except ParserError:
            with self._lock:
                if not self._procs:  # none left: _run fails waiters instead of blocking them
                    self._idle.put(None)
            return None

    def pids(self) -> list[int]:
        with self._lock:
            return [p.pid for p in self._procs]

    def close(self) -> None:
        self._closed = True
        with self._lock:
            procs = list(self._procs)
        for p in procs:
            try:
                p.stdin.close()
            except OSError:
                pass
            try:
                p.wait(timeout=5)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()


if __name__ == "__main__":
    _keep = next((int(a.split("=", 1)[1]) for a in sys.argv[1:] if a.startswith("--keep=")), None)
    worker_main(_keep)
