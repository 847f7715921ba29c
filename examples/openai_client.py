"""Send one OpenAI chat-completions body to the example server and get inputs_embeds back.

    python examples/server.py --bundle build/default --port 8000 &
    python examples/openai_client.py --url http://127.0.0.1:8000 --image cat.jpg --text "What is this?"

The body is exactly what `openai.OpenAI().chat.completions.create(model=..., messages=[...],
max_tokens=..., temperature=...)` sends: OpenAI's content items (`text`, `image_url` with a
data: URL) and the sampling fields, which the front-end ignores because they cannot change
inputs_embeds (docs/openai.md lists them). It is built by hand with the standard library: the
openai package would post to /chat/completions and parse a ChatCompletion, while this server
answers POST /v1/embed with the .npy of inputs_embeds. No network beyond the server you name.
"""

from __future__ import annotations

import argparse
import base64
import io
import json
import mimetypes
import pathlib
import urllib.error
import urllib.request


def chat_body(image: bytes, media_type: str, text: str, model: str = "qwen-vl") -> dict:
    """The JSON of client.chat.completions.create(...) with one image and one question."""
    url = f"data:{media_type};base64," + base64.b64encode(image).decode("ascii")
    return {
        "model": model,
        "messages": [
            {"role": "system", "content": "You are a helpful assistant."},
            {"role": "user", "content": [
                {"type": "image_url", "image_url": {"url": url}},
                {"type": "text", "text": text},
            ]},
        ],
        "max_tokens": 128,
        "temperature": 0.2,
        "stream": False,
    }


def embed(server: str, body: dict, timeout_s: float = 60.0):
    """POST `body` to server/v1/embed; returns (inputs_embeds ndarray, response headers).

    Raises:
        RuntimeError: the server refused the request (its JSON error is in the message).
    """
    import numpy as np

    req = urllib.request.Request(server.rstrip("/") + "/v1/embed", data=json.dumps(body).encode("utf-8"),
                                 headers={"Content-Type": "application/json", "Accept": "application/x-npy"})
    try:
        with urllib.request.urlopen(req, timeout=timeout_s) as resp:
            return np.load(io.BytesIO(resp.read()), allow_pickle=False), resp.headers  # case-insensitive
    except urllib.error.HTTPError as e:
        raise RuntimeError(f"HTTP {e.code}: {e.read().decode('utf-8', 'replace')}") from None


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--url", default="http://127.0.0.1:8000")
    p.add_argument("--image", required=True, type=pathlib.Path)
    p.add_argument("--text", default="What is in this picture?")
    a = p.parse_args(argv)
    media = mimetypes.guess_type(a.image.name)[0] or "image/jpeg"
    embeds, headers = embed(a.url, chat_body(a.image.read_bytes(), media, a.text))
    print(f"inputs_embeds {embeds.shape} {embeds.dtype}; tokens {headers.get('X-Num-Tokens')}, "
          f"images {headers.get('X-Num-Images')}")


if __name__ == "__main__":
    main()
