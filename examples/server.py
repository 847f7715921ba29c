"""Example HTTP server: a vlfront bundle behind Starlette + uvicorn, through the dynamic batcher.

    pip install 'vlfront[serve]'   # starlette + uvicorn; safetensors (from [export]) enables that format
    python examples/server.py --bundle build/default --host 127.0.0.1 --port 8000

    echo '{"messages": [{"role": "user", "content": [
            {"type": "image", "image_base64": "'"$(base64 -w0 cat.jpg)"'"},
            {"type": "text", "text": "What is in this picture?"}]}],
          "add_generation_prompt": true}' |
      curl -sS -D - -H 'Content-Type: application/json' --data-binary @- \
           http://127.0.0.1:8000/v1/embed -o embeds.npy
    python -c "import numpy; print(numpy.load('embeds.npy').shape)"    # (1, 1024, 768)

POST /v1/embed takes one request {"messages": [...], "add_generation_prompt": true} (SPEC section 1)
where an image item is {"type": "image", "image_base64": "<base64 of the encoded file>"} or OpenAI's
{"type": "image_url", "image_url": {"url": "data:image/...;base64,..."}}; an OpenAI chat-completions
body works as it is (examples/openai_client.py; docs/openai.md lists the fields ignored and refused).
Paths and file: URLs are refused: a server must never open files named by its clients; http(s)
image URLs only with --fetch-allow-domain (runtime/fetch.py: allowlist, public addresses only,
timeouts, size cap). The answer is inputs_embeds
[1, max_seq_len, D] float32 as .npy (application/x-npy, the default) or, with
`Accept: application/x-safetensors`, a safetensors file holding inputs_embeds, input_ids,
attention_mask and image_attention_mask. Headers: X-Dropped-Tokens (text tokens truncated),
X-Num-Tokens (real tokens), X-Num-Images, X-Inputs-Embeds-Shape ("1,1024,768").

Errors are JSON {"error": reason, "index": 0} (index: the request's position in the body, always 0
here): 400 bad JSON or a bad request (the reason names message and item), 406 an Accept we cannot
answer, 413 a body over --max-body-mb, 503 (Retry-After: 1) the batcher's queue is full or
--max-large-bodies bodies over --large-body-mb are already in flight. Those large bodies are
parsed in --parse-workers processes, long texts cut there to what can be kept (docs/runtime.md).
GET /healthz returns the runtime's stats (cache hits/misses, backend, precision) and batcher counts.
"""

import argparse
import asyncio
import contextlib
import io
import logging
import os

import numpy as np
import uvicorn
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import ClientDisconnect, Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from vlfront.errors import QueueFullError, RequestError
from vlfront.runtime import Batcher, Runtime
from vlfront.runtime.fetch import Fetcher, FetchPolicy
from vlfront.runtime.images import DECODE_MODES, ImageLimits
from vlfront.runtime.openai_compat import resolve_image_urls
from vlfront.runtime.request_body import BodyRefused, ParserError, ParserPool, keep_for, parse_body

try:
    from safetensors.numpy import save as safetensors_save
except ImportError:  # safetensors is an export dependency; without it only .npy is served
    safetensors_save = None

NPY, SAFETENSORS = "application/x-npy", "application/x-safetensors"
MiB = 1 << 20
log = logging.getLogger("vlfront.server")


class Refused(BodyRefused):
    """An HTTP-level refusal (status, message) raised before the request reaches the runtime."""


def create_app(bundle, precision: str = "fp32", backend: str = "auto", max_batch: int = 8,
               max_wait_s: float = 0.005, max_queue: int = 256, max_body_bytes: int = 32 * MiB,
               decode: str = "exact", cache: str | None = None, parse_workers: int | None = None,
               large_body_bytes: int = 2 * MiB, max_large_bodies: int = 4) -> Starlette:
    """The Starlette app; the runtime, batcher and body parsers live from lifespan startup to shutdown.

    `cache="redis://host:port/db"` shares visual tokens with other replicas (docs/triton.md).
    Bodies over `large_body_bytes` are parsed in `parse_workers` processes (default: half the
    CPUs, at least 1), at most `max_large_bodies` at once (more: 503); docs/runtime.md, "Large bodies"."""

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette):
        # allow_paths=False: even an item that slipped past `_image_item` cannot make us open a file.
        runtime = Runtime.load(bundle, backend, precision, image_limits=ImageLimits(allow_paths=False), decode=decode,
                               cache=cache)
        batcher = Batcher(runtime, max_batch=max_batch, max_wait_s=max_wait_s, max_queue=max_queue)
        keep = keep_for(runtime.tokenizer, runtime.config.max_text_tokens)  # long texts cut by the parsers
        parsers = ParserPool(parse_workers or max(1, (os.cpu_count() or 2) // 2), keep)
        app.state.runtime, app.state.batcher, app.state.parsers = runtime, batcher, parsers
        try:
            yield
        finally:
            batcher.close()  # finishes what is queued, then stops its worker
            parsers.close()
            runtime.close()

    app = Starlette(routes=[Route("/v1/embed", embed, methods=["POST"]), Route("/healthz", healthz)],
                    lifespan=lifespan, exception_handlers={405: method_not_allowed})
    app.state.max_body_bytes = max_body_bytes
    app.state.large_body_bytes = large_body_bytes
    app.state.large_bodies = LargeBodies(max_large_bodies)
    app.state.fetcher = None  # remote image URLs are refused unless main() (--fetch-allow-domain) sets a Fetcher
    return app


async def embed(request: Request) -> Response:
    state = request.app.state
    large = state.large_bodies.slot()
    try:
        fmt = negotiate(request.headers.get("accept", ""))
        check_content_type(request.headers.get("content-type"))
        chunks, size = await read_body(request, state.max_body_bytes, state.large_body_bytes, large)
        if size > state.large_body_bytes:  # JSON + base64 (+ long texts cut) in a parser process
            parsed = await state.parsers.parse(chunks)
            await asyncio.to_thread(resolve_image_urls, parsed, state.fetcher)
        else:  # up to a few MiB of JSON + base64, and any remote image downloads: off the loop
            parsed = await asyncio.to_thread(parse_request, b"".join(chunks), state.fetcher)
        large.release()  # the body is gone; what is left is ordinary request work
        out = await state.batcher.embed(parsed)
    except BodyRefused as e:
        return error(e.status, str(e), e.headers)
    except RequestError as e:
        return error(400, e.reason)
    except (QueueFullError, ParserError) as e:
        return error(503, str(e), {"Retry-After": "1"})
    except ClientDisconnect:  # the client went away mid-upload: nobody to answer, nothing to trace
        client = request.client.host if request.client else "?"
        log.warning("client %s disconnected during its upload to /v1/embed; request dropped", client)
        return Response(status_code=400)
    finally:
        large.release()
    headers = {"X-Dropped-Tokens": str(out.dropped_tokens[0]), "X-Num-Tokens": str(int(out.attention_mask.sum())),
               "X-Num-Images": str(out.images_per_request[0]),
               "X-Inputs-Embeds-Shape": ",".join(map(str, out.inputs_embeds.shape))}
    if fmt == SAFETENSORS:
        names = ("inputs_embeds", "input_ids", "attention_mask", "image_attention_mask")
        data = safetensors_save({n: np.ascontiguousarray(getattr(out, n)) for n in names})
    else:
        buf = io.BytesIO()
        np.lib.format.write_array(buf, out.inputs_embeds, allow_pickle=False)
        data = buf.getvalue()
    return Response(data, media_type=fmt, headers=headers)


async def healthz(request: Request) -> JSONResponse:
    batcher = request.app.state.batcher
    parsers = request.app.state.parsers
    return JSONResponse({**request.app.state.runtime.stats(),
                         "batcher": {"requests": batcher.requests, "batches": batcher.batches},
                         "parsers": {"pids": parsers.pids(), "parsed": parsers.parsed, "restarts": parsers.restarts}})


def check_content_type(value: str | None) -> None:
    """415 for a body declared as anything but JSON (a missing Content-Type is taken as JSON)."""
    if value is None or value.split(";")[0].strip().lower() == "application/json":
        return
    shown = value if len(value) <= 60 else value[:60] + "..."
    raise Refused(415, f"Content-Type {shown!r} is not supported; send the body as application/json")


async def method_not_allowed(request: Request, exc: HTTPException) -> JSONResponse:
    allow = (exc.headers or {}).get("Allow", "POST")
    return error(405, f"method {request.method} is not allowed on {request.url.path} (allowed: {allow})",
                 {"Allow": allow})


def negotiate(accept: str) -> str:
    """The response format for an Accept header (q-values are ignored: safetensors wins when listed)."""
    types = {part.split(";")[0].strip().lower() for part in accept.split(",")}
    if SAFETENSORS in types:
        if safetensors_save is None:
            raise Refused(406, f"{SAFETENSORS} needs the safetensors package on the server; ask for {NPY}")
        return SAFETENSORS
    if types & {NPY, "application/*", "*/*", ""}:
        return NPY
    raise Refused(406, f"cannot answer Accept: {accept!r}; ask for {NPY} (the default) or {SAFETENSORS}")


class LargeBodies:
    """How many bodies over large_body_bytes may be held at once (each up to --max-body-mb)."""

    def __init__(self, limit: int):
        self.limit, self.held = limit, 0

    def slot(self) -> "LargeBodies.Slot":
        return LargeBodies.Slot(self)

    class Slot:
        def __init__(self, owner: "LargeBodies"):
            self.owner, self.taken = owner, False

        def take(self, large: int) -> None:
            if self.taken:
                return
            if self.owner.held >= self.owner.limit:  # the event loop's thread only: no lock needed
                raise Refused(503, f"all {self.owner.limit} large-body slots are taken (bodies over {large} bytes "
                                   "being received or parsed, --max-large-bodies); retry", {"Retry-After": "1"})
            self.owner.held += 1
            self.taken = True

        def release(self) -> None:
            if self.taken:
                self.owner.held -= 1
                self.taken = False


async def read_body(request: Request, limit: int, large: int, slot: LargeBodies.Slot) -> tuple[list, int]:
    """The body as a list of chunks and its size; a body over `large` bytes takes a large-body slot."""
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        raise Refused(413, f"the body has {declared} bytes, over the limit of {limit} (--max-body-mb)")
    if declared.isdigit() and int(declared) > large:
        slot.take(large)
    chunks, size = [], 0
    async for chunk in request.stream():  # also bounds chunked bodies, which declare no length
        size += len(chunk)
        if size > limit:
            raise Refused(413, f"the body is over the limit of {limit} bytes (--max-body-mb)")
        if size > large:
            slot.take(large)
        if chunk:
            chunks.append(chunk)
    return chunks, size


def parse_request(body: bytes, fetcher: Fetcher | None = None) -> dict:
    """JSON body -> a runtime request, base64 images and image_url data URLs decoded to bytes, remote
    image URLs downloaded by `fetcher` when there is one; the runtime checks the rest."""
    request = parse_body(body)  # runtime/request_body.py: the same as the parser processes do
    resolve_image_urls(request, fetcher)  # OpenAI image_url items (docs/openai.md)
    return request


def error(status: int, message: str, headers: dict | None = None) -> JSONResponse:
    return JSONResponse({"error": message, "index": 0}, status_code=status, headers=headers)


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description="Serve a vlfront bundle over HTTP (POST /v1/embed, GET /healthz).")
    p.add_argument("--bundle", required=True, help="bundle directory written by `vlfront export`")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8000)
    p.add_argument("--precision", default="fp32", choices=["fp32", "fp16", "int8"])
    p.add_argument("--backend", default="auto", choices=["auto", "onnxruntime", "tensorrt"])
    p.add_argument("--max-batch", type=int, default=8)
    p.add_argument("--max-wait-ms", type=float, default=5.0, help="how long a batch may wait to fill")
    p.add_argument("--max-queue", type=int, default=256, help="queued requests before 503")
    p.add_argument("--max-body-mb", type=float, default=32.0, help="largest request body before 413")
    p.add_argument("--decode", default="exact", choices=list(DECODE_MODES),
                   help="image decoding: exact (SPEC 1.4), fast or fastest (DCT-scaled JPEG, docs/images.md)")
    p.add_argument("--parse-workers", type=int, help="processes that parse large bodies (default: half the CPUs)")
    p.add_argument("--large-body-mb", type=float, default=2.0,
                   help="bodies over this are parsed in a parser process (docs/runtime.md, 'Large bodies')")
    p.add_argument("--max-large-bodies", type=int, default=4, help="large bodies held at once before 503")
    p.add_argument("--cache", help="redis://host:port/db: a visual-token cache shared by replicas (docs/triton.md)")
    p.add_argument("--fetch-allow-domain", action="append", default=[], metavar="HOST",
                   help="download image_url http(s) URLs from HOST ('.example.com' adds subdomains); repeatable. "
                        "Off by default: remote URLs are refused (docs/openai.md)")
    p.add_argument("--fetch-allow-http", action="store_true", help="also plain http:// (default: https only)")
    p.add_argument("--fetch-timeout-s", type=float, default=5.0, help="connect and per-read timeout")
    p.add_argument("--fetch-deadline-s", type=float, default=15.0, help="whole download, redirects included")
    p.add_argument("--fetch-max-mb", type=float, default=16.0, help="largest image downloaded")
    a = p.parse_args(argv)
    app = create_app(a.bundle, a.precision, a.backend, a.max_batch, a.max_wait_ms / 1000, a.max_queue,
                     int(a.max_body_mb * MiB), a.decode, a.cache, a.parse_workers, int(a.large_body_mb * MiB),
                     a.max_large_bodies)
    if a.fetch_allow_domain:
        app.state.fetcher = Fetcher(FetchPolicy(tuple(a.fetch_allow_domain), a.fetch_allow_http,
                                                timeout_s=a.fetch_timeout_s, deadline_s=a.fetch_deadline_s,
                                                max_bytes=int(a.fetch_max_mb * MiB)))
    uvicorn.run(app, host=a.host, port=a.port)


if __name__ == "__main__":
    main()
