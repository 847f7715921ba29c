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
answer, 413 a body over --max-body-mb, 503 the batcher's queue is full (Retry-After: 1).
GET /healthz returns the runtime's stats (cache hits/misses, backend, precision) and batcher counts.
"""

import argparse
import asyncio
import base64
import contextlib
import io
import logging

import numpy as np
import uvicorn
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import ClientDisconnect, Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from vlfront.errors import QueueFullError, RequestError
from vlfront.runtime import Batcher, Runtime, json_guard
from vlfront.runtime.fetch import Fetcher, FetchPolicy
from vlfront.runtime.images import ImageLimits
from vlfront.runtime.openai_compat import resolve_image_urls

try:
    from safetensors.numpy import save as safetensors_save
except ImportError:  # safetensors is an export dependency; without it only .npy is served
    safetensors_save = None

NPY, SAFETENSORS = "application/x-npy", "application/x-safetensors"
MiB = 1 << 20
BODY_HINT = 'the body must be a JSON object {"messages": [...], "add_generation_prompt": true}'
log = logging.getLogger("vlfront.server")


class Refused(Exception):
    """An HTTP-level refusal (status, message) raised before the request reaches the runtime."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status


def create_app(bundle, precision: str = "fp32", backend: str = "auto", max_batch: int = 8,
               max_wait_s: float = 0.005, max_queue: int = 256, max_body_bytes: int = 32 * MiB,
               decode: str = "exact", cache: str | None = None) -> Starlette:
    """The Starlette app; the runtime and batcher live from lifespan startup to shutdown.

    `cache="redis://host:port/db"` shares visual tokens with other replicas (docs/triton.md)."""

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette):
        # allow_paths=False: even an item that slipped past `_image_item` cannot make us open a file.
        runtime = Runtime.load(bundle, backend, precision, image_limits=ImageLimits(allow_paths=False), decode=decode,
                               cache=cache)
        batcher = Batcher(runtime, max_batch=max_batch, max_wait_s=max_wait_s, max_queue=max_queue)
        app.state.runtime, app.state.batcher = runtime, batcher
        try:
            yield
        finally:
            batcher.close()  # finishes what is queued, then stops its worker
            runtime.close()

    app = Starlette(routes=[Route("/v1/embed", embed, methods=["POST"]), Route("/healthz", healthz)],
                    lifespan=lifespan, exception_handlers={405: method_not_allowed})
    app.state.max_body_bytes = max_body_bytes
    app.state.fetcher = None  # remote image URLs are refused unless main() (--fetch-allow-domain) sets a Fetcher
    return app


async def embed(request: Request) -> Response:
    try:
        fmt = negotiate(request.headers.get("accept", ""))
        check_content_type(request.headers.get("content-type"))
        body = await read_body(request, request.app.state.max_body_bytes)
        # up to 32 MiB of JSON + base64, and any remote image downloads: off the loop
        parsed = await asyncio.to_thread(parse_request, body, request.app.state.fetcher)
        out = await request.app.state.batcher.embed(parsed)
    except Refused as e:
        return error(e.status, str(e))
    except RequestError as e:
        return error(400, e.reason)
    except QueueFullError as e:
        return error(503, str(e), {"Retry-After": "1"})
    except ClientDisconnect:  # the client went away mid-upload: nobody to answer, nothing to trace
        client = request.client.host if request.client else "?"
        log.warning("client %s disconnected during its upload to /v1/embed; request dropped", client)
        return Response(status_code=400)
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
    return JSONResponse({**request.app.state.runtime.stats(),
                         "batcher": {"requests": batcher.requests, "batches": batcher.batches}})


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


async def read_body(request: Request, limit: int) -> bytes:
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        raise Refused(413, f"the body has {declared} bytes, over the limit of {limit} (--max-body-mb)")
    chunks, size = [], 0
    async for chunk in request.stream():  # also bounds chunked bodies, which declare no length
        size += len(chunk)
        if size > limit:
            raise Refused(413, f"the body is over the limit of {limit} bytes (--max-body-mb)")
        chunks.append(chunk)
    return b"".join(chunks)


def parse_request(body: bytes, fetcher: Fetcher | None = None) -> dict:
    """JSON body -> a runtime request, base64 images and image_url data URLs decoded to bytes, remote
    image URLs downloaded by `fetcher` when there is one; the runtime checks the rest."""
    try:
        request = json_guard.loads(body, "the body")  # UTF-8 and depth <= 64, worded as the C++ server
    except json_guard.JsonRefused as e:
        raise Refused(400, str(e)) from None
    if not isinstance(request, dict) or not isinstance(request.get("messages"), list):
        raise Refused(400, BODY_HINT)
    for m, message in enumerate(request["messages"]):
        if isinstance(message, dict) and isinstance(message.get("content"), list):
            message["content"] = [image_item(item, m, i) for i, item in enumerate(message["content"])]
    resolve_image_urls(request, fetcher)  # OpenAI image_url items (docs/openai.md)
    return request


def image_item(item, m: int, i: int):
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
    p.add_argument("--decode", default="exact", choices=["exact", "fast"],
                   help="image decoding: exact (SPEC 1.4) or fast (DCT-scaled JPEG, docs/images.md)")
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
                     int(a.max_body_mb * MiB), a.decode, a.cache)
    if a.fetch_allow_domain:
        app.state.fetcher = Fetcher(FetchPolicy(tuple(a.fetch_allow_domain), a.fetch_allow_http,
                                                timeout_s=a.fetch_timeout_s, deadline_s=a.fetch_deadline_s,
                                                max_bytes=int(a.fetch_max_mb * MiB)))
    uvicorn.run(app, host=a.host, port=a.port)


if __name__ == "__main__":
    main()
