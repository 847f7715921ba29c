"""Untrusted JSON and JSON-like request values: the same rules and words as the C++ runtime.

The C++ side (runtime/cpp/src/json_guard.h) checks the bytes before nlohmann parses them; here
the body is decoded strictly as UTF-8 and parsed by the json module, and the result's nesting is
measured without recursion. The rules (docs/runtime.md, "Untrusted JSON"):

- the bytes are UTF-8: otherwise "<subject> is not valid UTF-8: byte 0xff at offset 39"
  (the offset is where the bad sequence starts);
- arrays/objects (lists/dicts) nest at most MAX_JSON_DEPTH = 64 levels, the outermost being
  level 1: otherwise "<subject> nests arrays/objects deeper than 64 levels".

Syntax errors are worded by each language's parser and are not part of the shared text.
"""

from __future__ import annotations

import json

MAX_JSON_DEPTH = 64


class JsonRefused(ValueError):
    """Bytes or a value that break the rules above; str() is the whole reason."""


def depth_exceeds(value, limit: int = MAX_JSON_DEPTH) -> bool:
    """Whether lists/tuples/dicts in value nest deeper than limit (iterative: any depth is safe)."""
    stack = [(value, 1)] if isinstance(value, (list, tuple, dict)) else []
    while stack:
        node, depth = stack.pop()
        if depth > limit:
            return True
        children = node.values() if isinstance(node, dict) else node
        stack.extend((c, depth + 1) for c in children if isinstance(c, (list, tuple, dict)))
    return False


def check_depth(value, subject: str = "the request") -> None:
    """Raises JsonRefused when value nests deeper than MAX_JSON_DEPTH."""
    if depth_exceeds(value):
        raise JsonRefused(f"{subject} nests arrays/objects deeper than {MAX_JSON_DEPTH} levels")


def loads(data: bytes, subject: str = "the body"):
    """Parses untrusted bytes as JSON under the rules above.

    Raises:
        JsonRefused: not UTF-8, too deep, or not JSON (then the message is "<subject> is not
            valid JSON (<json's reason>)").
    """
    return loads_text(decode(data, subject), subject)


def decode(data: bytes, subject: str = "the body") -> str:
    """The bytes as strict UTF-8 text (JsonRefused naming the first bad byte otherwise)."""
    try:
        return bytes(data).decode("utf-8")
    except UnicodeDecodeError as e:
        raise JsonRefused(f"{subject} is not valid UTF-8: byte 0x{data[e.start]:02x} at offset {e.start}") from None


def loads_text(text: str, subject: str = "the body"):
    """`loads` of text already decoded by `decode` (a caller can then drop the bytes first)."""
    try:
        value = json.loads(text)
    except RecursionError:  # deeper than the interpreter's limit, hence deeper than ours
        raise JsonRefused(f"{subject} nests arrays/objects deeper than {MAX_JSON_DEPTH} levels") from None
    except ValueError as e:
        raise JsonRefused(f"{subject} is not valid JSON ({e})") from None
    check_depth(value, subject)
    return value
