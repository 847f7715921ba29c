"""The host-side tokenizer (SPEC section 1.2): a bundle's tokenizer.json, encoded fast.

Decision: the bundle ships a Hugging Face `tokenizers` file (the format users
and other runtimes read), but we encode with `tiktoken` whenever that file is
*rank-consistent*, because tiktoken is the SPEC's reference and about 4x faster than
`tokenizers` on one thread. A file is rank-consistent when:

- normalizer NFC; pre-tokenizer = Split(Qwen regex, Isolated) then ByteLevel
  without its own regex or prefix space;
- model BPE with a byte-level vocabulary holding all 256 bytes,
  `ignore_merges` true (tiktoken's "a pre-token in the vocab is one token"),
  no byte fallback, no word prefix/suffix;
- one merge per multi-byte token, listed in increasing order of the merged
  token's id, so merge priority == id == tiktoken rank.

Then `tiktoken.Encoding(mergeable_ranks=<vocab bytes -> id>).encode_ordinary`
is used. This assumes the merges were derived from the ranks (as ours and
Qwen's own tokenizer.json are); the export tests check token-exactness of the
two libraries over a mixed corpus and every vocabulary token. Any other
byte-level BPE file is served by `tokenizers` itself, with its added tokens
removed so that text stays ordinary: correct, but about 4x slower.

Either way: text is NFC-normalized with `unicodedata` first; a literal
`<|image_pad|>` in text is ordinary text; a str with a lone surrogate (not
encodable as UTF-8) is refused with TokenizerError instead of being silently
replaced. This module imports neither torch nor onnx.
"""

from __future__ import annotations

import functools
import json
import os
import pathlib
import unicodedata
from collections.abc import Sequence
from dataclasses import dataclass

from vlfront.config import NUM_ORDINARY_TOKENS, QWEN_PATTERN, SPECIAL_TOKENS, TOKENIZER_SIZE
from vlfront.errors import TokenizerError
from vlfront.runtime.text_prefix import FULL_CHARS, CutText, NoCutError, encode_prefix


def _bytes_to_unicode() -> dict[int, str]:
    """GPT-2's byte -> printable character table used by byte-level BPE vocabularies."""
    printable = list(range(ord("!"), ord("~") + 1)) + list(range(0xA1, 0xAD)) + list(range(0xAE, 0x100))
    table, extra = {}, 0
    for b in range(256):
        if b in printable:
            table[b] = chr(b)
        else:
            table[b] = chr(256 + extra)
            extra += 1
    return table


BYTE_TO_UNICODE: dict[int, str] = _bytes_to_unicode()
_SPECIAL_IDS: dict[str, int] = {s: i for i, s in SPECIAL_TOKENS.items()}
# str.translate table: byte-level symbol -> latin-1 string of its bytes. Code
# points below 256 that are not byte-level symbols map to U+FFFF, which the
# latin-1 encode then refuses, like every code point above 255 left untouched.
_SYMBOL_TO_LATIN1 = {cp: "\uffff" for cp in range(256)}
_SYMBOL_TO_LATIN1.update({ord(c): chr(b) for b, c in BYTE_TO_UNICODE.items()})


@dataclass(frozen=True)
class TokenizerFile:
    """A validated tokenizer.json.

    Attributes:
        path: where it was read from (for messages).
        doc: the parsed JSON.
        ranks: ordinary token bytes -> id.
        num_merges: length of the merge list.
        rank_consistent: whether tiktoken encodes it exactly (see module docstring).
        reason: why it is not rank-consistent ("" when it is).
    """

    path: str
    doc: dict
    ranks: dict[bytes, int]
    num_merges: int
    rank_consistent: bool
    reason: str

    @property
    def vocab_size(self) -> int:
        return max(max(self.ranks.values()), max(SPECIAL_TOKENS)) + 1


def _token_bytes(path, symbol) -> bytes:
    try:
        return symbol.translate(_SYMBOL_TO_LATIN1).encode("latin-1")
    except (UnicodeEncodeError, AttributeError):
        raise TokenizerError(
            f"{path}: vocab entry {symbol!r} is not byte-level (GPT-2 byte-to-unicode); "
            "only byte-level BPE tokenizers are supported"
        ) from None


def _check_shape(path, doc: dict) -> None:
    """JSON types of every key read below, so that a malformed file is a TokenizerError naming the key."""
    added = doc.get("added_tokens")
    if added is not None and (not isinstance(added, list) or not all(
            isinstance(t, dict) and isinstance(t.get("content"), str) and type(t.get("id")) is int for t in added)):
        raise TokenizerError(f"{path}: added_tokens must be a list of {{'id': int, 'content': str}} objects")
    model = doc["model"]
    if not isinstance(model.get("type", "BPE"), str):
        raise TokenizerError(f"{path}: model.type must be a string")
    dropout = model.get("dropout")
    if dropout is not None and (isinstance(dropout, bool) or not isinstance(dropout, (int, float))):
        raise TokenizerError(f"{path}: model.dropout must be null or a number")
    for key in ("continuing_subword_prefix", "end_of_word_suffix", "unk_token"):
        if model.get(key) is not None and not isinstance(model[key], str):
            raise TokenizerError(f"{path}: model.{key} must be null or a string")
    for key in ("ignore_merges", "byte_fallback", "fuse_unk"):
        if model.get(key) is not None and not isinstance(model[key], bool):
            raise TokenizerError(f"{path}: model.{key} must be true, false or null")


def _check_added_tokens(path, doc: dict) -> None:
    added = {}
    for tok in doc.get("added_tokens") or []:
        content, tid = tok["content"], tok["id"]
        if content not in _SPECIAL_IDS:
            raise TokenizerError(
                f"{path}: added token {content[:60]!r} (id {tid}) is not a SPEC 1.2 special token; remove it"
            )
        if tid != _SPECIAL_IDS[content]:
            raise TokenizerError(f"{path}: special token {content} has id {tid}; SPEC 1.2 requires {_SPECIAL_IDS[content]}")
        added[content] = tid
    missing = [f"{s} ({i})" for s, i in _SPECIAL_IDS.items() if s not in added]
    if missing:
        raise TokenizerError(f"{path}: added_tokens lack SPEC special tokens {', '.join(missing[:5])}")


def _read_vocab(path, model: dict) -> dict[bytes, int]:
    vocab = model.get("vocab")
    if not isinstance(vocab, dict) or not vocab:
        raise TokenizerError(f"{path}: model.vocab is missing or empty")
    ranks: dict[bytes, int] = {}
    for symbol, tid in vocab.items():
        if type(tid) is not int or tid < 0 or tid >= TOKENIZER_SIZE:
            raise TokenizerError(f"{path}: vocab entry {symbol!r} has id {tid!r}; ids must be ints in 0..{TOKENIZER_SIZE - 1}")
        if tid >= NUM_ORDINARY_TOKENS:
            if SPECIAL_TOKENS[tid] != symbol:
                raise TokenizerError(f"{path}: vocab entry {symbol!r} takes special id {tid} ({SPECIAL_TOKENS[tid]})")
            continue  # a special token repeated in the vocab: served by the added tokens
        ranks[_token_bytes(path, symbol)] = tid
    if len(set(ranks.values())) != len(ranks):
        raise TokenizerError(f"{path}: model.vocab assigns one id to several tokens")
    missing = [b for b in range(256) if bytes([b]) not in ranks]
    if missing:
        raise TokenizerError(f"{path}: model.vocab lacks single bytes {missing[:8]}; it cannot encode every text")
    return ranks


def _parse_merge(path, merge) -> tuple[str, str]:
    if isinstance(merge, str) and merge.count(" ") == 1:
        a, b = merge.split(" ")
        return a, b
    if isinstance(merge, list) and len(merge) == 2 and all(isinstance(m, str) for m in merge):
        return merge[0], merge[1]
    raise TokenizerError(f"{path}: malformed merge {merge!r}")


def _split_reason(doc: dict) -> str:
    """'' when the file normalizes with NFC and pre-splits with exactly the Qwen regex, else why not."""
    if doc.get("normalizer") not in ({"type": "NFC"}, {"type": "Sequence", "normalizers": [{"type": "NFC"}]}):
        return "normalizer is not NFC"
    pre = doc.get("pre_tokenizer") or {}
    steps = pre.get("pretokenizers") if isinstance(pre, dict) and pre.get("type") == "Sequence" else None
    if not isinstance(steps, list) or len(steps) != 2 or not all(isinstance(s, dict) for s in steps):
        return "pre_tokenizer is not Sequence[Split, ByteLevel]"
    split, byte_level = steps
    if (split.get("type"), split.get("pattern"), split.get("behavior"), split.get("invert")) != (
            "Split", {"Regex": QWEN_PATTERN}, "Isolated", False):
        return "pre_tokenizer Split is not the Qwen regex (Isolated, not inverted)"
    if (byte_level.get("type"), byte_level.get("add_prefix_space"), byte_level.get("use_regex")) != ("ByteLevel", False, False):
        return "pre_tokenizer ByteLevel adds a prefix space or its own regex"
    return ""


def _consistency(doc: dict, vocab: dict[str, int], num_ordinary: int, merges: list) -> str:
    """'' when tiktoken over `ranks` encodes exactly like this file, else the first reason it may not."""
    split = _split_reason(doc)
    if split:
        return split
    model = doc["model"]
    if not model.get("ignore_merges") or model.get("byte_fallback") or model.get("continuing_subword_prefix") \
            or model.get("end_of_word_suffix"):
        return "BPE needs ignore_merges=true, byte_fallback=false and no subword prefix/suffix"
    if len(merges) != num_ordinary - 256:
        return f"{len(merges)} merges for {num_ordinary - 256} multi-byte tokens"
    last = -1
    for a, b in merges:
        tid = vocab[a + b]
        if tid <= last:
            return f"merge {a!r} {b!r} is out of id order"
        last = tid
    return ""


def read_tokenizer_json(path: str | os.PathLike) -> TokenizerFile:
    """Parse and validate a tokenizer.json (the one validator of this format).

    Raises:
        TokenizerError: unreadable, truncated or corrupted JSON; not a byte-level
            BPE; special tokens missing or at ids other than SPEC 1.2's;
            more than 151,669 ids; BPE dropout (encoding would be random).
    """
    try:
        doc = json.loads(pathlib.Path(path).read_bytes())
    except OSError as e:
        raise TokenizerError(f"cannot read tokenizer file {path}: {e}") from None
    except (ValueError, UnicodeDecodeError) as e:  # JSONDecodeError, a 5000-digit int
        raise TokenizerError(f"{path}: not valid JSON (truncated or corrupted?): {e}") from None
    except RecursionError:
        raise TokenizerError(f"{path}: JSON nested too deeply; not a tokenizer.json") from None
    if not isinstance(doc, dict) or not isinstance(doc.get("model"), dict):
        raise TokenizerError(f"{path}: no `model` object; not a Hugging Face tokenizer.json")
    model = doc["model"]
    if model.get("type", "BPE") != "BPE":
        raise TokenizerError(f"{path}: model type {model.get('type')!r}; only byte-level BPE is supported")
    _check_shape(path, doc)
    if model.get("dropout"):
        raise TokenizerError(f"{path}: BPE dropout={model['dropout']} makes encoding random; set it to null")
    _check_added_tokens(path, doc)
    ranks = _read_vocab(path, model)
    merges_raw = model.get("merges")
    if not isinstance(merges_raw, list):
        raise TokenizerError(f"{path}: model.merges is missing")
    merges = [_parse_merge(path, m) for m in merges_raw]
    vocab = model["vocab"]
    for a, b in merges:
        if a not in vocab or b not in vocab or a + b not in vocab:
            raise TokenizerError(f"{path}: merge {a!r} {b!r} uses a token that is not in the vocab")
    reason = _consistency(doc, vocab, len(ranks), merges)
    return TokenizerFile(path=str(path), doc=doc, ranks=ranks, num_merges=len(merges),
                         rank_consistent=not reason, reason=reason)


class Tokenizer:
    """Encodes user text as ordinary tokens (SPEC 1.2) and decodes ids.

    Example:
        >>> tok = Tokenizer.from_file("build/default/tokenizer.json")
        >>> tok.encode("Hello world")
        [9707, 1879]
    """

    def __init__(self, tokenizer_file: TokenizerFile, name: str = "vlfront"):
        self.special_tokens: dict[str, int] = dict(_SPECIAL_IDS)
        self.vocab_size: int = tokenizer_file.vocab_size
        self.fallback_reason: str = tokenizer_file.reason
        self._id_to_bytes = {i: t for t, i in tokenizer_file.ranks.items()}
        self._id_to_bytes.update({i: s.encode("utf-8") for i, s in SPECIAL_TOKENS.items()})
        self._file = tokenizer_file
        self._hf = None
        # encode_prefix's cuts are proven for NFC + the Qwen split only (runtime/text_prefix.py).
        self.prefix_exact: bool = not _split_reason(tokenizer_file.doc)
        if tokenizer_file.rank_consistent:
            import tiktoken

            self.backend = "tiktoken"
            self._tiktoken = tiktoken.Encoding(name, pat_str=QWEN_PATTERN,
                                               mergeable_ranks=tokenizer_file.ranks, special_tokens={})
            # The Rust core directly: tiktoken's wrapper silently replaces lone surrogates (we
            # refuse them) and costs a Python frame per call.
            self._encode_ordinary = getattr(self._tiktoken, "_core_bpe", self._tiktoken).encode_ordinary
            self._encode = self._encode_tiktoken
        else:
            self.backend = "tokenizers"
            self._encode = self._encode_hf
            self._hf_tokenizer()  # load now: a file it cannot read fails at load, not at the first request

    def _hf_tokenizer(self):
        if self._hf is None:
            import tokenizers

            # Without added tokens nothing in text can become a special id; we
            # decode from our own table, so the decoder is not needed either.
            doc = dict(self._file.doc, added_tokens=[], post_processor=None, decoder=None)
            try:
                self._hf = tokenizers.Tokenizer.from_str(json.dumps(doc))
            except BaseException as e:  # a bare Exception for a file it cannot read; pyo3 panics derive from BaseException
                if not isinstance(e, Exception) and type(e).__name__ != "PanicException":
                    raise
                raise TokenizerError(f"{self._file.path}: Hugging Face tokenizers cannot load it: "
                                     f"{str(e)[:300]}") from None
        return self._hf

    def _encode_hf(self, text: str) -> list[int]:
        return self._hf_tokenizer().encode(text, add_special_tokens=False).ids

    def _encode_tiktoken(self, text: str) -> list[int]:
        try:
            return self._encode_ordinary(text)
        except BaseException as e:  # pyo3's PanicException derives from BaseException
            if type(e).__name__ != "PanicException":
                raise
            # tiktoken's regex overflows its stack on ~1 MB whitespace runs; the same
            # rank-consistent file gives the same tokens through `tokenizers`.
            return self._encode_hf(text)

    @classmethod
    def from_file(cls, path: str | os.PathLike) -> "Tokenizer":
        """Load and validate a bundle's tokenizer.json. Raises TokenizerError (see `read_tokenizer_json`)."""
        return cls(read_tokenizer_json(path), name=pathlib.Path(path).stem)

    @staticmethod
    def _normalize(text: str, index: int | None = None) -> str:
        if not isinstance(text, str):
            where = "" if index is None else f"text {index}: "
            raise TokenizerError(f"{where}expected str, got {type(text).__name__}")
        return unicodedata.normalize("NFC", text)

    @staticmethod
    def _surrogate_error(text: str, index: int | None = None) -> TokenizerError:
        where = "" if index is None else f"text {index}: "
        try:
            text.encode("utf-8")
        except UnicodeEncodeError as e:
            return TokenizerError(
                f"{where}lone surrogate {text[e.start]!r} at index {e.start} cannot be encoded as UTF-8; "
                "fix the text's decoding (or clean it with .encode('utf-8', 'replace').decode())")
        return TokenizerError(f"{where}text cannot be encoded as UTF-8")

    def encode(self, text: str) -> list[int]:
        """Token ids of NFC(text), all ordinary (special-token look-alikes stay text).

        Raises:
            TokenizerError: `text` is not a str or holds a lone surrogate.
        """
        try:
            return self._encode(self._normalize(text))
        except UnicodeEncodeError:  # a lone surrogate: found only when it happens, to keep the hot path lean
            raise self._surrogate_error(text) from None

    @functools.cached_property
    def max_token_bytes(self) -> int:
        """The longest ordinary token in bytes (text_prefix.prefix_chars bounds a cut with it)."""
        return max(map(len, self._file.ranks), default=1)

    def encode_prefix(self, text: str, limit: int, *, full_chars: int = FULL_CHARS) -> tuple[list[int], bool]:
        """The first tokens of `encode(text)`, bounded work for a long text (runtime/text_prefix.py).

        Returns:
            (ids, complete): complete -> ids == encode(text); else ids == encode(text)[:limit]
            and encode(text) has more than `limit` tokens.

        Raises:
            TokenizerError: `text` is not a str, holds a lone surrogate, or is a text over
                FULL_CHARS characters whose kept tokens end inside a run with no exact cut.
        """
        total = text.full_length if isinstance(text, CutText) else None
        if total is not None and not self.prefix_exact:
            raise TokenizerError("a cut text (CutText) needs a tokenizer with exact prefix cuts; this one "
                                 f"has none ({_split_reason(self._file.doc)}): pass the whole text")
        try:
            normalized = self._normalize(text)
            if not self.prefix_exact:  # no proven cut: all of it (slow, exact)
                return self._encode(normalized), True
            return encode_prefix(self._encode, normalized, limit, full_chars=full_chars, total=total)
        except UnicodeEncodeError:
            raise self._surrogate_error(text) from None
        except NoCutError as e:
            raise TokenizerError(str(e)) from None

    def encode_batch(self, texts: Sequence[str]) -> list[list[int]]:
        """`encode` for each text, in order (one thread on the tiktoken path)."""
        normalized = [self._normalize(t, i) for i, t in enumerate(texts)]
        for i, t in enumerate(normalized):
            if not t.isascii():
                try:
                    t.encode("utf-8")
                except UnicodeEncodeError:
                    raise self._surrogate_error(texts[i], i) from None
        if self.backend == "tokenizers":
            return [e.ids for e in self._hf_tokenizer().encode_batch(normalized, add_special_tokens=False)]
        return [self._encode(t) for t in normalized]

    def decode_bytes(self, ids: Sequence[int]) -> bytes:
        """The bytes of `ids`; special ids give their strings. Raises TokenizerError for an unknown id."""
        try:
            return b"".join([self._id_to_bytes[i] for i in ids])
        except (KeyError, TypeError):
            for k, i in enumerate(ids):
                if not isinstance(i, int) and not hasattr(i, "__index__") or i not in self._id_to_bytes:
                    raise TokenizerError(
                        f"id {i!r} at position {k} is not in the vocabulary (0..{self.vocab_size - 1})") from None
            raise

    def decode(self, ids: Sequence[int]) -> str:
        """The text of `ids` (invalid UTF-8, e.g. a cut multi-byte character, becomes U+FFFD)."""
        return self.decode_bytes(ids).decode("utf-8", errors="replace")
