"""OpenAI chat-completions shapes in a request (docs/openai.md).

The processor calls these for what OpenAI clients send beside our own form:

* request fields: `openai_fields.json` says which the front-end ignores (they
  cannot change `inputs_embeds`: model, temperature, stream, ...) and which it
  refuses (they would: n, tools, response_format, ...). The C++ runtime
  compiles the same file in, so both apply one table;
* message keys that OpenAI defines and our template has no place for (name,
  tool_calls, ...): refused, saying why;
* `{"type": "image_url", "image_url": {"url": "data:image/...;base64,..."}}`
  and the string form `"image_url": "data:..."`: decoded to the image bytes.
  Remote `http(s):` URLs are refused here (a server may fetch them first with
  `vlfront.runtime.fetch.Fetcher`), `file:` URLs always.

Messages never repeat a client's value, only its type or a key from the table.
"""

from __future__ import annotations

import binascii
import json
import pathlib
import re

from vlfront.errors import ImageError, RequestError

FIELDS_FILE = pathlib.Path(__file__).with_name("openai_fields.json")
FIELDS = json.loads(FIELDS_FILE.read_text(encoding="utf-8"))
IGNORED_REQUEST_FIELDS: dict[str, str] = FIELDS["request"]["ignored"]
REFUSED_REQUEST_FIELDS: dict[str, str] = FIELDS["request"]["refused"]
REFUSED_MESSAGE_KEYS: dict[str, str] = FIELDS["message"]["refused"]
REFUSED_IMAGE_URL_KEYS: dict[str, str] = FIELDS["image_url"]["refused"]
REFUSED_ITEM_TYPES: dict[str, str] = FIELDS["item_types"]["refused"]

DATA_URL_HINT = "data:image/png;base64,..."
_SCHEME = re.compile(r"([A-Za-z][A-Za-z0-9+.\-]*):")
_BASE64_BODY = re.compile(r"[A-Za-z0-9+/]*")


def request_fields(request: dict, own_keys: set[str], index) -> None:
    """Refuse OpenAI fields that would change the output and keys nobody defines; ignore the rest.

    Raises:
        RequestError: the first refused field (sorted), else the unknown keys.
    """
    for key in _str_keys(request):
        if key in REFUSED_REQUEST_FIELDS:
            raise RequestError(f"'{key}' is refused: {REFUSED_REQUEST_FIELDS[key]} (docs/openai.md)", index)
    extra = [k for k in request if not (isinstance(k, str) and (k in own_keys or k in IGNORED_REQUEST_FIELDS))]
    if extra:
        raise RequestError(f"unknown request keys {_keys(extra)}; allowed: {sorted(own_keys)} and the OpenAI "
                           "fields that cannot change the output (docs/openai.md)", index)


def message_keys(message: dict, where: str, index) -> None:
    """Refuse OpenAI message keys that the template cannot render (name, tool_calls, ...)."""
    for key in _str_keys(message):
        if key in REFUSED_MESSAGE_KEYS:
            raise RequestError(f"{where}: '{key}' is refused: {REFUSED_MESSAGE_KEYS[key]}", index)


def refused_item_type(kind: str, where: str, index) -> None:
    if kind in REFUSED_ITEM_TYPES:
        raise RequestError(f"{where}: type '{kind}' is refused: {REFUSED_ITEM_TYPES[kind]}", index)


def image_url_bytes(value, where: str, index) -> bytes:
    """The encoded image of an `image_url` value: {"url": "data:..."} or the URL itself.

    Raises:
        RequestError: a malformed value, a remote, file: or other non-data URL.
        ImageError: a data URL whose base64 does not decode.
    """
    url = image_url_string(value, where, index)
    return data_url_bytes(url, where, index)


def image_url_string(value, where: str, index) -> str:
    """The URL string of an `image_url` value, its shape checked (not its scheme)."""
    if isinstance(value, dict):
        for key in _str_keys(value):
            if key in REFUSED_IMAGE_URL_KEYS:
                raise RequestError(f"{where}: '{key}' is refused: {REFUSED_IMAGE_URL_KEYS[key]}", index)
        if set(value) != {"url"}:
            raise RequestError(f"{where}: image_url needs exactly the key ['url'], got {_keys(value)}", index)
        value = value["url"]
        if not isinstance(value, str):
            raise RequestError(f"{where}: the image_url's url must be a str, got {type(value).__name__}", index)
    elif not isinstance(value, str):
        raise RequestError(f"{where}: image_url must be a dict {{'url': ...}} or a str, got {type(value).__name__}",
                           index)
    return value


def _str_keys(d) -> list[str]:
    """The str keys of `d`, sorted (the table's keys are all str; others are never looked at)."""
    return sorted(k for k in d if isinstance(k, str))


def _keys(keys) -> str:
    """Keys for a message, bounded as the processor shows them (at most 10, each shortened)."""
    from vlfront.runtime.processor import _keys as show  # late: the processor imports this module

    return show(keys)


def url_scheme(url: str) -> str:
    """The lower-cased scheme of `url`, or "" when it has none."""
    m = _SCHEME.match(url)
    return m.group(1).lower() if m else ""


def data_url_bytes(url: str, where: str, index) -> bytes:
    """Decode `data:image/<type>[;params];base64,<data>`; refuse every other URL with the reason."""
    scheme = url_scheme(url)
    if scheme in ("http", "https"):
        raise RequestError(f"{where}: remote {scheme}: URLs are not fetched here; send the image as a data: URL "
                           f"({DATA_URL_HINT}), or let a server with a fetcher download it (docs/openai.md)", index)
    if scheme == "file":
        raise RequestError(f"{where}: file: URLs are never opened; send the image as a data: URL ({DATA_URL_HINT})",
                           index)
    if scheme != "data":
        what = "a URL of another scheme" if scheme else "a value that is not a URL"
        raise RequestError(f"{where}: image_url takes a data: URL ({DATA_URL_HINT}), got {what}", index)
    comma = url.find(",")
    if comma < 0:
        raise RequestError(f"{where}: the data URL has no ',' before its data ({DATA_URL_HINT})", index)
    params = url[5:comma].split(";")
    if not params[0].lower().startswith("image/"):
        raise RequestError(f"{where}: the data URL's media type is not image/* ({DATA_URL_HINT})", index)
    if len(params) < 2 or params[-1].lower() != "base64":
        raise RequestError(f"{where}: the data URL is not base64 ({DATA_URL_HINT}); percent-encoded data is "
                           "not accepted", index)
    data = base64_decode(url[comma + 1:])
    if data is None:
        raise ImageError(f"{where}: the data URL's data is not valid base64", index)
    return data


def base64_decode(text: str) -> bytes | None:
    """Standard base64 as the C++ runtime reads it (base64.h): line breaks skipped, '=' only as
    trailing padding (at most two), leftover bits dropped. None when it is not base64."""
    text = text.replace("\r", "").replace("\n", "")
    body = text.rstrip("=")
    if len(text) - len(body) > 2 or not _BASE64_BODY.fullmatch(body):
        return None
    full = len(body) - len(body) % 4
    out = binascii.a2b_base64(body[:full]) if full else b""
    rest = body[full:]
    if len(rest) >= 2:  # 12 or 18 bits: one or two more bytes
        out += binascii.a2b_base64(rest + "=" * (4 - len(rest)))
    return out


def resolve_image_urls(request, fetcher=None, max_remote: int = 5) -> None:
    """For a server: turn image_url items of `request` into image items with their bytes, in place.

    data: URLs are decoded here (off the event loop); http(s) URLs are downloaded with `fetcher`
    (a vlfront.runtime.fetch.Fetcher) when there is one, else left for the processor to refuse.
    Malformed items are left as they are, for the processor's own message.

    Raises:
        RequestError / ImageError / FetchError: a bad data URL, more than `max_remote` remote
            URLs in the request (checked before any download), or a refused download.
    """
    messages = request.get("messages") if isinstance(request, dict) else request
    if not isinstance(messages, list):
        return
    found = []  # (content list, position, where, url)
    for m, message in enumerate(messages):
        content = message.get("content") if isinstance(message, dict) else None
        if not isinstance(content, list):
            continue
        for i, item in enumerate(content):
            if isinstance(item, dict) and item.get("type") == "image_url" and set(item) == {"type", "image_url"}:
                where = f"message {m}, item {i}"
                try:
                    url = image_url_string(item["image_url"], where, None)
                except RequestError:
                    continue  # the processor words it
                found.append((content, i, where, url))
    remote = [f for f in found if url_scheme(f[3]) in ("http", "https")]
    if fetcher is not None and len(remote) > max_remote:
        raise RequestError(f"the request has {len(remote)} remote image URLs, over the limit of {max_remote} "
                           "fetched per request")
    for content, i, where, url in found:
        if url_scheme(url) in ("http", "https"):
            if fetcher is None:
                continue  # the processor refuses it, saying how to enable a fetcher
            content[i] = {"type": "image", "image": fetcher.fetch(url, where)}
        else:
            content[i] = {"type": "image", "image": data_url_bytes(url, where, None)}


def markdown_tables() -> str:
    """The fields table as Markdown, for docs/openai.md (a test keeps the two equal)."""
    rows = ["| where | field / key | front-end | why |", "|---|---|---|---|"]
    for section, label in (("request", "request body"), ("message", "message"), ("image_url", "image_url object"),
                           ("item_types", "content item type")):
        for verdict in ("ignored", "refused"):
            for key, why in FIELDS[section].get(verdict, {}).items():
                rows.append(f"| {label} | `{key}` | {verdict} | {why} |")
    return "\n".join(rows) + "\n"


if __name__ == "__main__":  # python -m vlfront.runtime.openai_compat: the table of docs/openai.md
    print(markdown_tables(), end="")
