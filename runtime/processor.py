"""Requests → token layout (SPEC section 1.3), without decoding any image.

A request is one of:

* a list of messages, with the generation prompt added; or
* a dict ``{"messages": [...], "add_generation_prompt": bool}`` (the flag is
  optional, default True; the OpenAI fields of runtime/openai_fields.json
  that cannot change the output are ignored, those that would are refused, and
  any other key is refused so that a typo does not pass silently).

A message is ``{"role": "system"|"user"|"assistant", "content": ...}`` where
content is a str or a list of items ``{"type": "text", "text": str}`` /
``{"type": "image", "image": <path | bytes | PIL.Image | uint8 HxWx3 array>}`` /
OpenAI's ``{"type": "image_url", "image_url": {"url": "data:image/...;base64,..."}}``
(or ``"image_url": "data:..."``; remote and file: URLs are refused, see openai_compat).
Messages and items take no other keys. A request needs at least one message.

Layout, per message: ``<|im_start|> + enc(role + "\\n") + render(content) +
<|im_end|> + enc("\\n")``, then ``<|im_start|> + enc("assistant\\n")`` when the
generation prompt is on. render: consecutive text items are concatenated and
encoded once (a text run); an image is ``<|vision_start|>`` + tokens_per_image
× ``<|image_pad|>`` + ``<|vision_end|>``.

Text must be a str: bytes are refused (decode them first), and so are lone
surrogates (not valid Unicode, they cannot be UTF-8 encoded) and NUL
characters (C servers and tokenizers cut strings at NUL, so a NUL would make
this runtime and the C++ one disagree). Special-token look-alikes in text are
ordinary text: the tokenizer never returns a special id for them, and the
processor refuses a tokenizer that does.

Limits: text-run tokens ≤ max_text_tokens and the sequence ≤ max_seq_len.
``truncation="truncate"`` drops tokens from the end of the last text run, then
the run before it, until both hold; ``"error"`` refuses instead. Template and
image tokens are never dropped; a request that does not fit even so is
refused. All indices in messages are 0-based.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from vlfront.config import (
    IM_END_ID,
    IM_START_ID,
    IMAGE_PAD_ID,
    NUM_ORDINARY_TOKENS,
    PAD_ID,
    VISION_END_ID,
    VISION_START_ID,
    Config,
)
from vlfront.errors import ConfigError, RequestError, TokenizerError
from vlfront.runtime import openai_compat
from vlfront.runtime.images import DECODE_MODES, ImageLimits, ImageSource, image_value_error
from vlfront.runtime.text_prefix import FULL_CHARS, CutText, text_length

ROLES = ("system", "user", "assistant")
TRUNCATION_POLICIES = ("truncate", "error")
_REQUEST_KEYS = {"messages", "add_generation_prompt"}
_MESSAGE_KEYS = {"role", "content"}
_ITEM_KEYS = {"text": {"type", "text"}, "image": {"type", "image"}, "image_url": {"type", "image_url"}}


@dataclass(eq=False)
class Layout:
    """One request laid out for the fusion stage.

    Attributes:
        input_ids: int64 [max_seq_len], right-padded with PAD_ID (151643).
        attention_mask: int64 [max_seq_len], 1 on real tokens.
        image_attention_mask: int64 [max_seq_len], 1 on ``<|image_pad|>``.
        images: the request's images in order of appearance (not decoded).
        dropped_tokens: text tokens removed by truncation.
        num_tokens: real tokens (the rest is padding).
    """

    input_ids: np.ndarray
    attention_mask: np.ndarray
    image_attention_mask: np.ndarray
    images: list[ImageSource] = field(default_factory=list)
    dropped_tokens: int = 0
    num_tokens: int = 0


class Processor:
    """Turns chat requests into token layouts.

    Args:
        tokenizer: any object with ``encode(text: str) -> list[int]`` that
            encodes ordinary text (NFC applied, no special ids).
        config: the bundle's Config (max_seq_len, max_text_tokens, image_size).
        truncation: "truncate" (default) or "error", see the module docstring.
        image_limits: limits for image sources (ImageLimits() when None).
        decode: image decode mode, "exact" (SPEC 1.4), "fast" or "fastest" (runtime/images.py); part of each image key.

    Raises:
        ConfigError: an unknown truncation policy or an invalid config.

    Example:
        >>> p = Processor(tokenizer, preset("tiny"))
        >>> lay = p.layout([{"role": "user", "content": "Hi"}], 0)
        >>> int(lay.attention_mask.sum()) == lay.num_tokens
        True
    """

    def __init__(self, tokenizer, config: Config, truncation: str = "truncate",
                 image_limits: ImageLimits | None = None, decode: str = "exact"):
        if truncation not in TRUNCATION_POLICIES:
            raise ConfigError(f"truncation={truncation!r}: choose one of {list(TRUNCATION_POLICIES)}")
        self.tokenizer = tokenizer
        self.config = config.validate()
        self.truncation = truncation
        self.image_limits = image_limits or ImageLimits()
        if decode not in DECODE_MODES:
            raise ConfigError(f"decode={decode!r}: choose one of {list(DECODE_MODES)}")
        self.decode = decode
        self._role_ids = {role: self._encode(role + "\n") for role in ROLES}
        self._newline_ids = self._encode("\n")
        n = config.tokens_per_image
        self._image_ids = [VISION_START_ID] + [IMAGE_PAD_ID] * n + [VISION_END_ID]

    def layout(self, request, index: int | None = None) -> Layout:
        """Lay out one request (SPEC section 1.3); images are checked and read, not decoded.

        Args:
            request: a list of messages or a dict with "messages" (module docstring).
            index: the request's position in its batch, named in errors.

        Returns:
            Layout with fixed-length arrays of config.max_seq_len.

        Raises:
            RequestError: a malformed request, text that is not clean Unicode,
                or a sequence that does not fit; ImageError (a RequestError)
                for an image that cannot be read or is over a limit.
        """
        messages, add_prompt = self._unpack(request, index)
        # segments: ("ids", template/image ids) | ("text", run ids) | ("image", (value, where))
        segments: list[tuple[str, object]] = []
        n_images = 0
        for m, message in enumerate(messages):
            role, items = self._message(message, index, m)
            segments.append(("ids", [IM_START_ID] + self._role_ids[role]))
            run: list[str] = []
            for i, item in enumerate(items):
                kind, value = self._item(item, index, m, i)
                if kind == "text":
                    run.append(value)
                    continue
                if run:
                    segments.append(("text", ("".join(run), m)))  # encoded below, once the budget is known
                    run = []
                segments.append(("image", (value, f"image {n_images} (message {m}, item {i})")))
                n_images += 1
            if run:
                segments.append(("text", ("".join(run), m)))
            segments.append(("ids", [IM_END_ID] + self._newline_ids))
        if add_prompt:
            segments.append(("ids", [IM_START_ID] + self._role_ids["assistant"]))
        self._encode_runs(segments, n_images, index)
        dropped = self._fit(segments, n_images, index)
        # Images are read only once the request is known to fit.
        size, limits = self.config.image_size, self.image_limits
        images = [ImageSource(value, size, limits, index, where, self.decode)
                  for value, where in (v for kind, v in segments if kind == "image")]
        return self._pack(segments, images, dropped)

    def process(self, requests) -> list[Layout | RequestError]:
        """Lay out a batch; a bad request yields its RequestError in place, the others still run."""
        if isinstance(requests, dict) or not isinstance(requests, (list, tuple)):
            raise RequestError(f"process() takes a list of requests, got {type(requests).__name__}; "
                               "wrap a single request in a list")
        out: list[Layout | RequestError] = []
        for i, request in enumerate(requests):
            try:
                out.append(self.layout(request, i))
            except RequestError as e:
                out.append(e)
            except Exception as e:  # noqa: BLE001 — one request's surprise stays with it
                out.append(unexpected_request_error(e, i))
        return out

    # -- parsing ----------------------------------------------------------

    def _unpack(self, request, index):
        add_prompt = True
        if isinstance(request, dict):
            if "messages" not in request:
                raise RequestError(f"a request dict needs a 'messages' list; got keys {_keys(request)} "
                                   "(to lay out several requests, pass a list of them to process())", index)
            openai_compat.request_fields(request, _REQUEST_KEYS, index)  # OpenAI fields: ignored or refused
            add_prompt = request.get("add_generation_prompt", True)
            if not isinstance(add_prompt, bool):
                raise RequestError(f"add_generation_prompt must be true or false, got {_show(add_prompt)}", index)
            messages = request["messages"]
        else:
            messages = request
        if not isinstance(messages, (list, tuple)):
            raise RequestError(f"messages must be a list, got {type(messages).__name__}", index)
        if not messages:
            raise RequestError("the request has no messages", index)
        return messages, add_prompt

    def _message(self, message, index, m):
        where = f"message {m}"
        if not isinstance(message, dict):
            raise RequestError(f"{where}: must be a dict with 'role' and 'content', "
                               f"got {type(message).__name__}", index)
        openai_compat.message_keys(message, where, index)
        missing = _MESSAGE_KEYS - set(message)
        extra = set(message) - _MESSAGE_KEYS
        if missing or extra:
            raise RequestError(f"{where}: needs exactly the keys ['content', 'role']; "
                               f"missing {sorted(missing)}, unknown {_keys(extra)}", index)
        role, content = message["role"], message["content"]
        if not isinstance(role, str):
            raise RequestError(f"{where}: role must be one of {list(ROLES)}, got {type(role).__name__}", index)
        if role not in ROLES:
            raise RequestError(f"{where}: role {_show(role)} is not one of {list(ROLES)}", index)
        if isinstance(content, str):
            return role, [{"type": "text", "text": content}]
        if not isinstance(content, (list, tuple)):
            raise RequestError(f"{where}: content must be a str or a list of items, "
                               f"got {type(content).__name__}", index)
        return role, content

    def _item(self, item, index, m, i):
        where = f"message {m}, item {i}"
        if not isinstance(item, dict):
            raise RequestError(f"{where}: an item must be a dict like {{'type': 'text', 'text': ...}}, "
                               f"got {type(item).__name__}", index)
        kind = item.get("type")
        if isinstance(kind, str):
            openai_compat.refused_item_type(kind, where, index)
        if not isinstance(kind, str) or kind not in _ITEM_KEYS:
            raise RequestError(f"{where}: type {_show(kind)} is not 'text', 'image' or 'image_url'", index)
        if set(item) != _ITEM_KEYS[kind]:
            raise RequestError(f"{where}: a {kind} item needs exactly the keys {sorted(_ITEM_KEYS[kind])}, "
                               f"got {_keys(item)}", index)
        value = item[kind]
        if kind == "image_url":  # OpenAI's form: a data: URL, decoded to the encoded image
            return "image", openai_compat.image_url_bytes(value, where, index)
        reason = _text_error(value) if kind == "text" else image_value_error(value)
        if reason:
            raise RequestError(f"{where}: {reason}", index)
        return kind, value

    # -- layout -----------------------------------------------------------

    def _encode(self, text: str) -> list[int]:
        return self._check_ids(self.tokenizer.encode(text))

    @staticmethod
    def _check_ids(ids) -> list[int]:
        ids = list(ids)
        if ids and (min(ids) < 0 or max(ids) >= NUM_ORDINARY_TOKENS):
            bad = next(t for t in ids if not 0 <= t < NUM_ORDINARY_TOKENS)
            raise TokenizerError(f"the tokenizer returned id {bad} for ordinary text; ids must be in "
                                 f"0..{NUM_ORDINARY_TOKENS - 1} (special tokens are never encoded from text)")
        return ids

    def _encode_runs(self, segments, n_images: int, index) -> None:
        """Encode the text runs in place, only as far as they can be kept (docs/runtime.md).

        The first FULL_CHARS characters of a request's text are encoded in full (exact counts);
        a later run is encoded from an exact prefix (`encode_prefix`) while kept tokens are still
        missing, and not at all once they are all there: it then counts as one token. A run not
        encoded in full is a `_Run` with `more`; the request's count is then a lower bound.
        """
        cfg = self.config
        fixed = sum(len(v) for kind, v in segments if kind == "ids") + n_images * len(self._image_ids)
        left = max(0, min(cfg.max_text_tokens, cfg.max_seq_len - fixed))  # kept tokens still to find
        full_left = FULL_CHARS
        encode_prefix = getattr(self.tokenizer, "encode_prefix", None)
        for k, (kind, value) in enumerate(segments):
            if kind != "text":
                continue
            text, m = value
            if encode_prefix is None and isinstance(text, CutText):
                raise RequestError(f"message {m}: a cut text (CutText) needs a tokenizer with encode_prefix; "
                                   f"{type(self.tokenizer).__name__} has none: pass the whole text", index)
            if encode_prefix is None or text_length(text) <= full_left:
                run = _Run(self._encode(text))
                full_left -= text_length(text) if encode_prefix is not None else 0
            elif left == 0:
                run = _Run()
                run.more = True  # non-empty, so at least one token; all of it is dropped
            else:
                try:
                    ids, complete = encode_prefix(text, left, full_chars=0)
                except TokenizerError as e:
                    raise RequestError(f"message {m}: {e}", index) from None
                run = _Run(self._check_ids(ids))
                run.more = not complete
            left = max(0, left - len(run))
            segments[k] = ("text", run)

    def _fit(self, segments, n_images: int, index) -> int:
        """Apply the limits in place; return how many text tokens were dropped.

        A run that was not encoded in full (`more`) counts one token more than it holds: the
        count (and dropped_tokens) is then a lower bound.
        """
        cfg = self.config
        runs = [ids for kind, ids in segments if kind == "text"]
        text = sum(len(r) + r.more for r in runs)
        at_least = "at least " if any(r.more for r in runs) else ""
        fixed = sum(len(v) for kind, v in segments if kind == "ids") + n_images * len(self._image_ids)
        over = max(text - cfg.max_text_tokens, fixed + text - cfg.max_seq_len)
        if over <= 0:
            return 0
        per_image = len(self._image_ids)
        if fixed > cfg.max_seq_len:
            raise RequestError(
                f"the request needs {fixed} template and image tokens even with all text dropped, "
                f"{fixed - cfg.max_seq_len} over max_seq_len={cfg.max_seq_len} ({n_images} images take "
                f"{per_image} tokens each); send fewer images or split the request", index)
        if self.truncation == "error":
            raise RequestError(
                f"the request has {at_least}{text} text tokens (max_text_tokens={cfg.max_text_tokens}) and "
                f"{at_least}{fixed + text} tokens in all (max_seq_len={cfg.max_seq_len}, images take {per_image} "
                f"tokens each): {at_least}{over} tokens over; shorten the text or use truncation='truncate'", index)
        left = over - sum(r.more for r in runs)  # keep the first text - over of the counted tokens
        for run in reversed(runs):
            cut = min(left, len(run))
            del run[len(run) - cut:]
            left -= cut
            if not left:
                break
        return over

    def _pack(self, segments, images: list[ImageSource], dropped: int) -> Layout:
        seq_len = self.config.max_seq_len
        ids: list[int] = []
        for kind, value in segments:
            ids.extend(self._image_ids if kind == "image" else value)
        n = len(ids)
        input_ids = np.full(seq_len, PAD_ID, dtype=np.int64)
        input_ids[:n] = ids
        attention_mask = np.zeros(seq_len, dtype=np.int64)
        attention_mask[:n] = 1
        image_attention_mask = (input_ids == IMAGE_PAD_ID).astype(np.int64)
        return Layout(input_ids, attention_mask, image_attention_mask, images, dropped, n)


def unexpected_request_error(error: Exception, index: int | None) -> RequestError:
    """Our error for an exception no check foresaw while laying out one request (the boundary
    catches it so that it fails that request only)."""
    if isinstance(error, RecursionError):
        reason = "a value of the request is nested too deeply to be read"
    elif isinstance(error, MemoryError):
        reason = "the request needs more memory than is available"
    else:
        reason = f"the request could not be laid out ({type(error).__name__})"
    return RequestError(reason, index)


def _show(value) -> str:
    """A client value in a message without repr() of the value itself: repr() of a deep list
    recurses, of a 5,000-digit int raises. A short str, bool, None, small int or float is shown
    as Python shows it; a long str by its first 60 characters; anything else by its type."""
    if isinstance(value, str):
        return repr(value) if len(value) <= 60 else repr(value[:60]) + f"... ({len(value)} characters)"
    if value is None or isinstance(value, (bool, float)) or (type(value) is int and -10**18 < value < 10**18):
        return repr(value)
    return type(value).__name__


def _keys(keys) -> str:
    """The sorted keys of a dict (or set) for a message: str keys shortened, others by type, at most 10."""
    names = sorted(k[:60] if isinstance(k, str) else f"<{type(k).__name__}>" for k in keys)
    return str(names[:10]) + (f" and {len(names) - 10} more" if len(names) > 10 else "")


class _Run(list):
    """A text run's token ids; `more`: the run has more tokens than these (not all were encoded)."""

    more = False


def _text_error(text) -> str | None:
    """Why `text` cannot be a text item, or None when it is clean."""
    if isinstance(text, (bytes, bytearray, memoryview)):
        return ("text must be a str, got bytes; decode it first (e.g. data.decode('utf-8')) — "
                "bytes that are not valid UTF-8 are not text")
    if not isinstance(text, str):
        return f"text must be a str, got {type(text).__name__}"
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as e:
        return (f"text has a lone surrogate {text[e.start]!r} at character {e.start}; "
                "it is not valid Unicode (was it decoded with errors='surrogateescape'?)")
    pos = text.find("\0")
    if pos >= 0:
        return f"text has a NUL character at position {pos}; NUL is refused (C servers cut strings at NUL)"
    return None
