"""Tokenize only what can be kept: the first tokens of a long text, provably exact.

The processor keeps at most `max_text_tokens` tokens of a text run, the run's
FIRST ones (SPEC 1.3 drops from the end). Encoding a 30 MiB text in full to
keep 512 tokens costs seconds and a gigabyte; `encode_prefix` encodes a prefix
of the text instead, cut where the cut cannot change any token before it.

Why a cut is exact. Encoding is NFC, then the Qwen regex split into pieces,
then BPE inside each piece. NFC runs on the whole text first (cheap). BPE of
a piece depends on the whole piece, so a cut must fall on a piece boundary of
the full text, and the pieces before it must be the same whether or not the
text goes on. The regex match at a start p < c depends on characters beyond
c-1 only through what it tests at c: a consuming test (does text[c] continue
the match?) or the lookahead `(?!\\S)`, which the end of the text passes and a
non-space fails. Between a = text[c-1] and b = text[c] (docs/runtime.md has the
table), each of these makes every test at c fail both on b and at the end of the
text, and `(?!\\S)` is never tested at c:

1. a is an ASCII digit: `\\p{N}` is a one-character piece; nothing consumes past it.
2. b is a space or a tab and a is not whitespace: after a letter the next test
   is a letter, after a digit nothing, after punctuation a letter, punctuation
   or a newline; a space is none of them.
3. a is CR or LF and b is not whitespace: `\\s*[\\r\\n]+` (tried before
   `\\s+(?!\\S)`) matches the whole whitespace run up to c in both texts.
4. a is surely a letter and b surely not a letter (ASCII, or a few CJK ranges
   whose categories never changed): after a letter only a letter continues.

"Whitespace" here is a superset of every definition in use (Unicode White_Space,
Python's str.isspace, older Unicode versions), so that a differing table can only
hide a cut, never invent one. Then encode(text) = encode(text[:c]) + encode(text[c:]).

Work is bounded: a text of at most FULL_CHARS characters is encoded in full
(exact count); a longer one from a window that doubles until it holds more than
`limit` tokens (a token is at most 128 bytes, so the window stays under
~256 x limit + MAX_GAP characters). If no cut exists within MAX_GAP characters of
where the window must end (one word, whitespace or punctuation run that long),
the text is refused: its kept tokens cannot be known without encoding all of it.
The C++ runtime (tokenizer.cc, `encode_prefix`) implements the same rules with the
same constants, counting code points, so both keep the same tokens, report the same
counts and refuse the same texts with the same message.
"""

from __future__ import annotations

import re

FULL_CHARS = 1 << 17
MAX_GAP = 1 << 16

# Superset of whitespace in any table a tokenizer may use.
_MAYBE_WS = "\\t\\n\\x0b\\x0c\\r\\x1c-\\x20\\x85\\xa0\\u1680\\u180e\\u2000-\\u200b\\u2028\\u2029\\u202f\\u205f\\u3000\\ufeff"
# Letters in every Unicode version: ASCII, CJK Unified Ideographs (1.1), kana, Hangul syllables (2.0).
_SURE_LETTER = "A-Za-z\\u4e00-\\u9fa5\\u3041-\\u3094\\u30a1-\\u30fa\\uac00-\\ud7a3"
# Non-letters in every Unicode version: ASCII non-letters, CJK and fullwidth punctuation.
_SURE_NON_LETTER = "\\x00-\\x40\\x5b-\\x60\\x7b-\\x7f\\u3001\\u3002\\uff01\\uff0c\\uff1a\\uff1b\\uff1f"

_CUT = re.compile(
    "(?:(?<=[0-9])"
    f"|(?<![{_MAYBE_WS}])(?=[ \\t])"
    f"|(?<=[\\r\\n])(?![{_MAYBE_WS}])"
    f"|(?<=[{_SURE_LETTER}])(?=[{_SURE_NON_LETTER}]))"
    "(?=[\\s\\S])")


class NoCutError(ValueError):
    """A long text with no exact cut where its kept tokens end (see the module docstring)."""


class CutText(str):
    """The first characters of a longer NFC text, cut by a parser before the runtime saw the rest.

    examples/server.py parses bodies over a few MiB in worker processes (runtime/request_body.py),
    which send back only `prefix_chars(...)` characters of a longer text: `full_length` is the whole
    text's length, and that whole text was checked there (valid Unicode, no NUL, NFC). encode_prefix
    on it gives what it gives on the whole text, or raises CutTooShortError if it would ever need a
    character past the cut; it never answers from characters it does not have.
    """

    full_length: int

    def __new__(cls, prefix: str, full_length: int):
        if not isinstance(prefix, str) or full_length <= len(prefix):
            raise ValueError(f"CutText: a prefix of {len(prefix)} characters cannot stand for {full_length}")
        self = super().__new__(cls, prefix)
        self.full_length = full_length
        return self

    def __reduce__(self):
        return CutText, (str(self), self.full_length)


class CutTooShortError(RuntimeError):
    """encode_prefix needed characters past a CutText's end (prefix_chars was too small): a bug, not bad input."""


def text_length(text: str) -> int:
    """len() of the text that `text` stands for: a CutText's full length, else len(text)."""
    return text.full_length if isinstance(text, CutText) else len(text)


def prefix_chars(limit: int, max_token_bytes: int, max_gap: int = MAX_GAP) -> int:
    """How many leading characters of a text `encode_prefix(..., limit)` can ever read.

    Each loop step reads characters below target + max_gap + 1; a step that does not return had
    encoded a prefix of c characters into at most `limit` tokens, so c <= max_token_bytes * limit
    (a character is at least a byte), and the next target is 2c. A text cut after this many
    characters (a CutText) therefore gives the same result as the whole text.
    """
    return max(4 * (limit + 1), 64, 2 * max_token_bytes * limit) + max_gap + 1


def first_cut(text: str, start: int, stop: int) -> int | None:
    """The first exact cut c with start <= c < stop (0 < c < len(text)), or None."""
    m = _CUT.search(text, max(start, 1), min(stop, len(text)))
    return m.start() if m else None


def encode_prefix(encode, text: str, limit: int, *, full_chars: int = FULL_CHARS,
                  max_gap: int = MAX_GAP, total: int | None = None) -> tuple[list[int], bool]:
    """The first tokens of `encode(text)` without encoding all of a long text.

    Args:
        encode: the tokenizer's encode of NFC text (the Qwen regex split, then BPE).
        text: NFC-normalized text.
        limit: how many leading tokens the caller may keep.
        total: when `text` is only the first characters of a longer text (CutText), that text's
            length; every decision that depends on the length uses it.

    Returns:
        (ids, complete): complete -> ids is all of encode(text); else ids is
        encode(text)[:limit] and encode(text) has more than `limit` tokens.

    Raises:
        NoCutError: text over `full_chars` characters with no exact cut within
            `max_gap` characters of where the needed prefix ends.
        CutTooShortError: `total` is given and the answer needs characters past len(text).
    """
    have = len(text)
    n = have if total is None else total
    if have < n and n <= full_chars:
        raise CutTooShortError(f"a text of {n} characters is encoded in full here, but only {have} were kept")
    if n <= full_chars:
        return encode(text), True
    target = max(4 * (limit + 1), 64)
    while target < n:
        if have < n and target + max_gap + 1 > have:
            raise CutTooShortError(f"the cut after {have} of {n} characters is too short for limit={limit}: "
                                   f"the search reads up to character {target + max_gap}")
        c = first_cut(text, target, target + max_gap + 1)
        if c is None:
            if target + max_gap + 1 >= n:
                break  # the rest is shorter than a gap: encode it all
            raise NoCutError(
                f"text of {n} characters has no place to cut it exactly in characters {target}..{target + max_gap} "
                f"(a word, number, whitespace or punctuation run over {max_gap} characters), so its kept tokens "
                "cannot be found without tokenizing all of it: shorten the text or split that run")
        ids = encode(text[:c])
        if len(ids) > limit:
            return ids[:limit], False
        target = 2 * c
    if have < n:  # unreachable: target < have < n all along
        raise CutTooShortError(f"the whole text of {n} characters is needed, only {have} were kept")
    ids = encode(text)
    return (ids, True) if len(ids) <= limit else (ids[:limit], False)
