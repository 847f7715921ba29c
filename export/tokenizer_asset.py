"""The tokenizer asset (SPEC section 1.2): the Qwen ranks and the bundle's tokenizer.json.

`fetch_ranks` takes `dashscope/resources/qwen.tiktoken` out of the pinned
dashscope wheel and checks its sha256; `load_ranks` parses and validates it;
`build_tokenizer_json` turns the ranks into a Hugging Face `tokenizers` file
that encodes like `tiktoken` (NFC, the Qwen regex, byte-level BPE);
`validate_tokenizer_json` checks a user's own tokenizer.json.

How the merges are derived: tiktoken has no merge list, only ranks. For each
multi-byte token we replay tiktoken's byte-pair merge on the token's own bytes,
allowed to use only tokens of lower rank; it ends in exactly two parts, which
are the token's merge. Merges are listed in the order of the rank of their
result, so merge priority == token id, and `ignore_merges` reproduces
tiktoken's shortcut (a pre-token that is itself in the vocabulary is one token).

CLI (the Makefile's `setup` target runs `fetch`):

    python -m vlfront.export.tokenizer_asset fetch --out build/cache/qwen.tiktoken
    python -m vlfront.export.tokenizer_asset build --ranks build/cache/qwen.tiktoken --out tokenizer.json
    python -m vlfront.export.tokenizer_asset validate PATH
"""

from __future__ import annotations

import argparse
import base64
import binascii
import hashlib
import json
import os
import pathlib
import subprocess
import sys
import tempfile
import zipfile

from vlfront.config import NUM_ORDINARY_TOKENS, QWEN_PATTERN, SPECIAL_TOKENS
from vlfront.errors import TokenizerError
from vlfront.runtime.tokenizer import BYTE_TO_UNICODE, read_tokenizer_json

DASHSCOPE_VERSION = "2.0.2"
RANKS_MEMBER = "dashscope/resources/qwen.tiktoken"
RANKS_SHA256 = "b2b1b8dfb5cc5f024bafc373121c6aba3f66f9a5a0269e243470a1de16a33186"
RANKS_SIZE = 2_561_218


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _write_atomic(path: pathlib.Path, data: bytes) -> None:
    """Write to a temporary file beside `path`, then rename: readers never see half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.chmod(tmp, 0o644)  # mkstemp makes 0600; the asset is meant to be shared
        os.replace(tmp, path)
    except BaseException:
        pathlib.Path(tmp).unlink(missing_ok=True)
        raise


def _check_ranks_bytes(data: bytes, source: str) -> None:
    actual = _sha256(data)
    if actual != RANKS_SHA256 or len(data) != RANKS_SIZE:
        raise TokenizerError(
            f"{source}: sha256 {actual} ({len(data):,} bytes) differs from the pinned "
            f"{RANKS_SHA256} ({RANKS_SIZE:,} bytes); the ranks are corrupted or not Qwen's"
        )


def fetch_ranks(out_path: str | os.PathLike) -> pathlib.Path:
    """Extract the Qwen ranks from the dashscope wheel, sha256-verified, written atomically.

    Runs `python -m pip download --no-deps dashscope==2.0.2` (the only download
    the project makes) with the current interpreter. An existing file with the
    pinned hash is kept as it is, without a download.

    Args:
        out_path: where to write `qwen.tiktoken`; parent folders are created.
    Returns:
        The path written.
    Raises:
        TokenizerError: pip failed, the wheel lacks the ranks, or their hash differs.
    """
    out = pathlib.Path(out_path)
    if out.is_file():
        try:
            _check_ranks_bytes(out.read_bytes(), str(out))
            return out
        except TokenizerError:
            pass  # a stale or damaged copy: fetch it again
    with tempfile.TemporaryDirectory(prefix="vlfront-dashscope-") as tmp:
        cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--disable-pip-version-check",
               "-q", f"dashscope=={DASHSCOPE_VERSION}", "-d", tmp]
        proc = subprocess.run(cmd, capture_output=True, text=True)
        if proc.returncode != 0:
            raise TokenizerError(
                f"`{' '.join(cmd[1:])}` failed (exit {proc.returncode}): {proc.stderr.strip()[-800:]}; "
                f"the ranks need PyPI access once, or copy qwen.tiktoken to {out} by hand"
            )
        wheels = sorted(pathlib.Path(tmp).glob("dashscope-*.whl"))
        if not wheels:
            raise TokenizerError(f"pip download left no dashscope wheel in {tmp}")
        try:
            with zipfile.ZipFile(wheels[0]) as whl:
                data = whl.read(RANKS_MEMBER)
        except KeyError:
            raise TokenizerError(f"{wheels[0].name} has no member {RANKS_MEMBER}") from None
        except zipfile.BadZipFile as e:
            raise TokenizerError(f"{wheels[0].name} is not a readable wheel: {e}") from None
    _check_ranks_bytes(data, f"{wheels[0].name}:{RANKS_MEMBER}")
    _write_atomic(out, data)
    return out


def load_ranks(path: str | os.PathLike) -> dict[bytes, int]:
    """Parse and validate a tiktoken ranks file (`<base64 token> <rank>` per line).

    Returns:
        token bytes -> rank, 151,643 entries with ranks 0..151642.
    Raises:
        TokenizerError: unreadable file, a malformed line (named by number),
            a duplicate token or rank, or the wrong count.
    """
    path = pathlib.Path(path)
    try:
        lines = path.read_bytes().splitlines()
    except OSError as e:
        raise TokenizerError(f"cannot read ranks file {path}: {e}") from None
    ranks: dict[bytes, int] = {}
    seen_ranks: set[int] = set()
    for lineno, line in enumerate(lines, 1):
        if not line.strip():
            continue
        fields = line.split()
        try:
            if len(fields) != 2:
                raise ValueError("expected `<base64 token> <rank>`")
            token, rank = base64.b64decode(fields[0], validate=True), int(fields[1])
        except (ValueError, binascii.Error) as e:
            raise TokenizerError(f"{path}, line {lineno}: {line[:80]!r}: {e}") from None
        if not token or token in ranks or rank in seen_ranks or not 0 <= rank < NUM_ORDINARY_TOKENS:
            raise TokenizerError(
                f"{path}, line {lineno}: token {token!r} rank {rank} is empty, a duplicate, "
                f"or outside 0..{NUM_ORDINARY_TOKENS - 1}"
            )
        ranks[token] = rank
        seen_ranks.add(rank)
    if len(ranks) != NUM_ORDINARY_TOKENS:
        raise TokenizerError(f"{path}: {len(ranks):,} tokens, expected {NUM_ORDINARY_TOKENS:,} (truncated?)")
    return ranks


def _split_token(ranks: dict[bytes, int], token: bytes, max_rank: int) -> list[bytes]:
    """tiktoken's byte-pair merge of `token`, using only ranks below `max_rank` (leftmost lowest first)."""
    parts = [token[i:i + 1] for i in range(len(token))]
    while len(parts) > 1:
        best, best_rank = -1, max_rank
        for i in range(len(parts) - 1):
            rank = ranks.get(parts[i] + parts[i + 1])
            if rank is not None and rank < best_rank:
                best, best_rank = i, rank
        if best < 0:
            break
        parts[best:best + 2] = [parts[best] + parts[best + 1]]
    return parts


def derive_merges(ranks: dict[bytes, int]) -> list[tuple[bytes, bytes]]:
    """The BPE merges that reproduce `ranks`, ordered by the rank of their result.

    Raises:
        TokenizerError: a single byte is missing, or a token is not reachable
            from two lower-ranked tokens.
    """
    missing = [b for b in range(256) if bytes([b]) not in ranks]
    if missing:
        raise TokenizerError(f"ranks lack single bytes {missing[:8]}: not a byte-level BPE")
    merges = []
    for token, rank in sorted(ranks.items(), key=lambda kv: kv[1]):
        if len(token) == 1:
            continue
        parts = _split_token(ranks, token, rank)
        if len(parts) != 2:
            raise TokenizerError(f"token {token!r} (rank {rank}) does not merge from two lower-ranked tokens")
        merges.append((parts[0], parts[1]))
    return merges


def build_tokenizer_json(ranks: dict[bytes, int]) -> bytes:
    """A Hugging Face tokenizer.json equivalent to tiktoken over `ranks` (deterministic bytes).

    Args:
        ranks: token bytes -> rank (= token id), e.g. from `load_ranks`.
    Returns:
        UTF-8 JSON; the same ranks always give the same bytes.
    Raises:
        TokenizerError: the ranks are not a byte-level BPE (see `derive_merges`).
    """
    bad = [r for r in ranks.values() if not 0 <= r < NUM_ORDINARY_TOKENS]
    if bad:
        raise TokenizerError(f"rank {bad[0]} collides with the special ids {NUM_ORDINARY_TOKENS}.. (SPEC 1.2)")

    def to_str(token: bytes) -> str:
        return "".join(BYTE_TO_UNICODE[b] for b in token)

    merges = derive_merges(ranks)
    doc = {
        "version": "1.0",
        "truncation": None,
        "padding": None,
        "added_tokens": [
            {"id": i, "content": s, "single_word": False, "lstrip": False, "rstrip": False,
             "normalized": False, "special": True}
            for i, s in sorted(SPECIAL_TOKENS.items())
        ],
        "normalizer": {"type": "NFC"},
        "pre_tokenizer": {"type": "Sequence", "pretokenizers": [
            {"type": "Split", "pattern": {"Regex": QWEN_PATTERN}, "behavior": "Isolated", "invert": False},
            {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": False, "use_regex": False},
        ]},
        "post_processor": None,
        "decoder": {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": False, "use_regex": False},
        "model": {
            "type": "BPE", "dropout": None, "unk_token": None, "continuing_subword_prefix": None,
            "end_of_word_suffix": None, "fuse_unk": False, "byte_fallback": False, "ignore_merges": True,
            "vocab": {to_str(t): r for t, r in sorted(ranks.items(), key=lambda kv: kv[1])},
            # "a b" strings, not pairs: byte-level symbols never hold a space, and
            # every tokenizers release since 0.19 reads this form.
            "merges": [f"{to_str(a)} {to_str(b)}" for a, b in merges],
        },
    }
    return json.dumps(doc, ensure_ascii=False, separators=(",", ":")).encode("utf-8")


def write_tokenizer_json(ranks: dict[bytes, int], path: str | os.PathLike) -> pathlib.Path:
    """Build the tokenizer.json for `ranks` and write it atomically to `path`; return the path."""
    path = pathlib.Path(path)
    _write_atomic(path, build_tokenizer_json(ranks))
    return path


def validate_tokenizer_json(path: str | os.PathLike) -> dict:
    """Check a (user's own) tokenizer.json before it goes into a bundle.

    It must parse as JSON and with Hugging Face `tokenizers`, be a byte-level
    BPE, carry the 26 SPEC special tokens at their SPEC ids, and have at most
    151,669 ids. The structural checks are the runtime's own loader's.

    Returns:
        A summary for the manifest: sha256, size, vocab_size, num_merges,
        special_tokens, rank_consistent (served by tiktoken) and its reason.
    Raises:
        TokenizerError: naming the file and the problem.
    """
    import tokenizers

    info = read_tokenizer_json(path)
    try:
        tokenizers.Tokenizer.from_file(str(path))
    except Exception as e:  # tokenizers raises a bare Exception for a bad file
        raise TokenizerError(f"{path}: Hugging Face tokenizers cannot load it: {e}") from None
    data = pathlib.Path(path).read_bytes()
    return {
        "sha256": _sha256(data),
        "size": len(data),
        "vocab_size": info.vocab_size,
        "num_merges": info.num_merges,
        "special_tokens": {s: i for i, s in sorted(SPECIAL_TOKENS.items())},
        "rank_consistent": info.rank_consistent,
        "rank_consistent_reason": info.reason,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m vlfront.export.tokenizer_asset", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("fetch", help="extract the sha256-pinned Qwen ranks from the dashscope wheel")
    p.add_argument("--out", required=True, type=pathlib.Path)
    p = sub.add_parser("build", help="write tokenizer.json from a ranks file")
    p.add_argument("--ranks", required=True, type=pathlib.Path)
    p.add_argument("--out", required=True, type=pathlib.Path)
    p = sub.add_parser("validate", help="check a tokenizer.json against SPEC 1.2")
    p.add_argument("path", type=pathlib.Path)
    args = parser.parse_args(argv)
    try:
        if args.cmd == "fetch":
            print(f"wrote {fetch_ranks(args.out)} (sha256 {RANKS_SHA256[:12]}...)")
        elif args.cmd == "build":
            print(f"wrote {write_tokenizer_json(load_ranks(args.ranks), args.out)}")
        else:
            print(json.dumps(validate_tokenizer_json(args.path), indent=2))
    except TokenizerError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
