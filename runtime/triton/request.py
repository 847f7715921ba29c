"""The Triton request format: one BYTES element = one SPEC request as JSON, images as base64.

    {"messages": [{"role": "user", "content": [
        {"type": "image", "image_base64": "<base64 of the encoded file>"},
        {"type": "text", "text": "What is in this picture?"}]}],
     "add_generation_prompt": true}

This is the body of the example server's POST /v1/embed, so a client moves between the two
unchanged. Paths are refused (the model never opens files named by a client).

Or, without base64: the encoded files in the optional BYTES input `images` (one row per element
of `request`), named by position from the JSON: {"type": "image", "image_index": 0}. The JSON
stays small (no 0.66 MB string to scan for a 3 MP photo) and the client encodes nothing.
"""

from __future__ import annotations

import base64
import binascii
import json

import pybase64

from vlfront.errors import RequestError
from vlfront.runtime import json_guard

MiB = 1 << 20
HINT = ('the "request" tensor holds one JSON object {"messages": [...], "add_generation_prompt": true} '
        'per element, images as {"type": "image", "image_base64": "..."}')


def parse_request(raw, max_bytes: int = 64 * MiB, images: list | None = None) -> dict:
    """One element of the `request` tensor -> a runtime request (image items hold the encoded bytes).

    Args:
        raw: the element (UTF-8 JSON).
        max_bytes: limit on the JSON's size (the model parameter max_request_mb).
        images: this element's row of the `images` input (encoded files, bytes), which image items
            {"type": "image", "image_index": j} name; None when the request has no `images` input.
            Elements that no item names are ignored (rows are padded to one length).

    Raises:
        RequestError: not bytes/UTF-8 JSON, over `max_bytes`, nested deeper than 64, or a bad image item
            (bad base64, an image_index that is not an int or names no element of `images`).
    """
    if isinstance(raw, str):
        raw = raw.encode("utf-8", "surrogatepass")
    if not isinstance(raw, (bytes, bytearray, memoryview)):
        raise RequestError(f"request element of type {type(raw).__name__}; {HINT}")
    if len(raw) > max_bytes:
        raise RequestError(f"request of {len(raw)} bytes is over the limit of {max_bytes} bytes "
                           "(model parameter max_request_mb)")
    try:  # the JSON rules and words of both runtimes: UTF-8, depth <= 64 (docs/runtime.md)
        request = json_guard.loads(raw, "the request")
    except json_guard.JsonRefused as e:
        raise RequestError(f"{e}; {HINT}") from None
    if not isinstance(request, dict) or not isinstance(request.get("messages"), list):
        raise RequestError(HINT)
    for m, message in enumerate(request["messages"]):
        if isinstance(message, dict) and isinstance(message.get("content"), list):
            message["content"] = [_image_item(item, m, i, images) for i, item in enumerate(message["content"])]
    return request


def _image_item(item, m: int, i: int, images: list | None):
    if not isinstance(item, dict) or ("image_base64" not in item and "image_index" not in item):
        return item  # text items (and anything else) are checked by the runtime's processor
    where = f"message {m}, item {i}"
    if "image_index" in item:
        return _indexed_image(item, where, images)
    if (item.get("type") != "image" or set(item) != {"type", "image_base64"}
            or not isinstance(item["image_base64"], str)):
        raise RequestError(f"{where}: an image item is exactly {{\"type\": \"image\", \"image_base64\": \"<base64 of "
                           f"the encoded file>\"}}, got keys {sorted(map(str, item))}")
    try:  # SIMD: 0.03 ms for a 3 MP JPEG's 0.66 MB of base64, base64.b64decode 1.7 ms (docs/triton.md)
        data = pybase64.b64decode(item["image_base64"], validate=True)
    except (ValueError, binascii.Error) as e:
        raise RequestError(f"{where}: image_base64 is not valid base64 ({e})") from None
    return {"type": "image", "image": data}


def _indexed_image(item: dict, where: str, images: list | None) -> dict:
    j = item["image_index"]
    if item.get("type") != "image" or set(item) != {"type", "image_index"} or type(j) is not int:
        raise RequestError(f"{where}: an image item is exactly {{\"type\": \"image\", \"image_index\": <int>}} (an "
                           f"element of the \"images\" input), got keys {sorted(map(str, item))} and an image_index "
                           f"of type {type(j).__name__}")
    if images is None:
        raise RequestError(f"{where}: image_index names an element of the \"images\" input, which this request "
                           "does not have; send the encoded files there, or use image_base64")
    if not 0 <= j < len(images):
        shown = j if abs(j) < 10**9 else f"of {len(str(j))} digits"
        raise RequestError(f"{where}: image_index {shown} is out of range: this element's row of the \"images\" input "
                           f"has {len(images)} elements")
    data = images[j]
    if not isinstance(data, (bytes, bytearray)):
        raise RequestError(f"{where}: element {j} of the \"images\" input is {type(data).__name__}, not bytes")
    return {"type": "image", "image": data}


def encode_request(messages: list, add_generation_prompt: bool = True) -> bytes:
    """Client side: a message list whose image items hold bytes -> the JSON of one `request` element."""
    def item(it):
        if isinstance(it, dict) and it.get("type") == "image" and isinstance(it.get("image"), (bytes, bytearray)):
            return {"type": "image", "image_base64": base64.b64encode(it["image"]).decode("ascii")}
        return it

    out = [{**m, "content": [item(i) for i in m["content"]]} if isinstance(m.get("content"), list) else m
           for m in messages]
    return json.dumps({"messages": out, "add_generation_prompt": add_generation_prompt}).encode("utf-8")


def encode_request_images(messages: list, add_generation_prompt: bool = True) -> tuple[bytes, list[bytes]]:
    """Client side, without base64: (the JSON of one `request` element, its row of the `images` input).

    Image items that hold bytes become {"type": "image", "image_index": j}, j counting them in order.
    """
    files: list[bytes] = []

    def item(it):
        if isinstance(it, dict) and it.get("type") == "image" and isinstance(it.get("image"), (bytes, bytearray)):
            files.append(bytes(it["image"]))
            return {"type": "image", "image_index": len(files) - 1}
        return it

    out = [{**m, "content": [item(i) for i in m["content"]]} if isinstance(m.get("content"), list) else m
           for m in messages]
    return json.dumps({"messages": out, "add_generation_prompt": add_generation_prompt}).encode("utf-8"), files
