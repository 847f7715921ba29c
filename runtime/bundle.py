"""Open and validate a bundle (docs/bundle.md). One validator, used at every load.

Nothing is served from a bundle until its manifest parses, its config and
special ids match the SPEC, and every file the caller will use has the size
and sha256 the manifest lists and lies inside the bundle directory.
"""

from __future__ import annotations

import hashlib
import json
import os
import pathlib
from dataclasses import dataclass, field

from vlfront.config import (IM_END_ID, IM_START_ID, IMAGE_PAD_ID, PAD_ID, SPECIAL_TOKENS, VISION_END_ID,
                            VISION_START_ID, Config)
from vlfront.errors import BundleError
from vlfront.runtime import manifest_schema
from vlfront.runtime.onnx_scan import OnnxScanError, external_data

SCHEMA_VERSION = 1
FORMAT = "vlfront-bundle"
MANIFEST = "manifest.json"
MAX_MANIFEST_BYTES = 16 * 1024 * 1024
SPECIAL_IDS = {"pad": PAD_ID, "im_start": IM_START_ID, "im_end": IM_END_ID, "vision_start": VISION_START_ID,
               "vision_end": VISION_END_ID, "image_pad": IMAGE_PAD_ID}
_HASH_CHUNK = 8 * 1024 * 1024


def sha256_file(path: str | os.PathLike) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(_HASH_CHUNK):
            h.update(chunk)
    return h.hexdigest()


def safe_path(root: pathlib.Path, rel: str) -> pathlib.Path:
    """Resolve `rel` inside `root`, refusing absolute paths, `..`, symlinks and escapes."""
    p = pathlib.PurePosixPath(rel)
    if not rel or p.is_absolute() or ".." in p.parts or "\\" in rel or rel.startswith("~"):
        raise BundleError(f"{root}: manifest path {rel!r} leaves the bundle directory; refusing it")
    full = root / pathlib.Path(*p.parts)
    if full.is_symlink():
        raise BundleError(f"{root}: {rel} is a symbolic link; bundles hold plain files only")
    try:
        full.resolve().relative_to(root.resolve())
    except ValueError:
        raise BundleError(f"{root}: {rel} resolves outside the bundle directory; refusing it") from None
    return full


def _no_constant(name: str):
    raise ValueError(f"{name} is not JSON")


@dataclass
class Bundle:
    """A validated bundle directory and its manifest."""

    root: pathlib.Path
    manifest: dict
    config: Config
    _verified: set = field(default_factory=set)

    @classmethod
    def open(cls, root: str | os.PathLike) -> "Bundle":
        """Read and check manifest.json (not the files yet: see `verify`).

        Raises:
            BundleError: missing or unreadable manifest, wrong format or schema, bad config or special ids.
        """
        root = pathlib.Path(root)
        path = root / MANIFEST
        if not path.is_file():
            raise BundleError(f"{root}: no {MANIFEST}; build a bundle with `vlfront export --out {root}`")
        if path.stat().st_size > MAX_MANIFEST_BYTES:
            raise BundleError(f"{path}: {path.stat().st_size} bytes exceeds the {MAX_MANIFEST_BYTES}-byte limit")
        try:
            manifest = json.loads(path.read_bytes().decode("utf-8"), parse_constant=_no_constant)
        except RecursionError:
            manifest = None  # nested deeper than the parser goes: refused below like any deep manifest
        except (UnicodeDecodeError, ValueError) as e:  # ValueError: JSONDecodeError, NaN, a 5000-digit int
            raise BundleError(f"{path}: not valid JSON ({e}); rebuild the bundle") from None
        if manifest is None or manifest_schema.depth_exceeds(manifest):
            raise BundleError(f"{path}: JSON nested deeper than {manifest_schema.MAX_DEPTH} levels; "
                              "not a vlfront manifest (rebuild the bundle)")
        if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
            raise BundleError(f"{path}: not a vlfront bundle manifest (format != {FORMAT!r})")
        version = manifest.get("schema_version")
        if version != SCHEMA_VERSION:
            raise BundleError(f"{path}: schema_version {version!r}, this vlfront reads {SCHEMA_VERSION}; "
                              "rebuild the bundle with this vlfront (`vlfront export`) or upgrade vlfront")
        config = manifest_schema.validate(manifest, str(path))
        if manifest["special_ids"] != SPECIAL_IDS:
            raise BundleError(f"{path}: special_ids {manifest['special_ids']} differ from the SPEC's {SPECIAL_IDS}")
        for rel, entry in manifest["files"].items():
            safe_path(root, rel)
            manifest_schema.check_file_entry(rel, entry, str(path))
        return cls(root, manifest, config)

    def path(self, rel: str) -> pathlib.Path:
        """The verified path of a file the manifest lists (size and sha256 checked once)."""
        entry = self.manifest["files"].get(rel)
        if not isinstance(entry, dict):
            raise BundleError(f"{self.root}: {rel} is not listed in the manifest; rebuild the bundle")
        full = safe_path(self.root, rel)
        if rel in self._verified:
            return full
        if not full.is_file():
            raise BundleError(f"{self.root}: {rel} is missing; rebuild the bundle with `vlfront export`")
        size = full.stat().st_size
        if size != entry.get("size"):
            raise BundleError(f"{self.root}: {rel} has {size} bytes, the manifest lists {entry.get('size')}: "
                              "the file was changed or truncated; rebuild the bundle")
        digest = sha256_file(full)
        if digest != entry.get("sha256"):
            raise BundleError(f"{self.root}: {rel} sha256 {digest[:16]}… differs from the manifest's "
                              f"{str(entry.get('sha256'))[:16]}…: the file was tampered with; rebuild the bundle")
        self._verified.add(rel)
        return full

    def graph_path(self, name: str, precision: str = "fp32") -> pathlib.Path:
        """The verified ONNX file of a graph variant, its external-data files verified too, and every
        external-data location inside the graph checked against the manifest (docs/bundle.md rule 5)."""
        entry = self.graph(name, precision)
        for rel in entry.get("external_data", []):
            self.path(rel)
        full = self.path(entry["file"])
        try:
            refs = external_data(full.read_bytes())
        except OnnxScanError as e:
            raise BundleError(f"{self.root}: {entry['file']}: {e}; rebuild the bundle") from None
        files = self.manifest["files"]
        for ref in refs:
            rel = ref.location  # relative to the graph's directory: the bundle root
            while rel.startswith("./"):
                rel = rel[2:]
            if rel not in files:
                raise BundleError(f"{self.root}: {entry['file']}: tensor {ref.tensor} keeps its data in "
                                  f"'{ref.location}', a file the manifest does not list; refusing the graph "
                                  "(rebuild the bundle)")
            self.path(rel)
            size = files[rel]["size"]
            if ref.offset < 0 or ref.offset > size or (ref.length >= 0 and ref.length > size - ref.offset):
                raise BundleError(f"{self.root}: {entry['file']}: tensor {ref.tensor} points at bytes "
                                  f"{ref.offset}+{ref.length} of {rel}, which has {size}; rebuild the bundle")
        return full

    def verify_all(self) -> None:
        """Check every listed file (what `vlfront export` does before it calls a bundle done)."""
        for rel in self.manifest["files"]:
            self.path(rel)

    def graph(self, name: str, precision: str = "fp32") -> dict:
        """The manifest entry of a graph variant, or BundleError saying how to get it."""
        variants = self.manifest["graphs"].get(name)
        if not isinstance(variants, dict) or name not in ("patch_embed", "fusion"):
            raise BundleError(f"{self.root}: graph {name!r} is not in the manifest; rebuild the bundle")
        entry = variants.get(precision)
        if entry is None:
            have = sorted(variants)
            hint = "run `vlfront calibrate --bundle DIR`" if precision in ("int8", "fp16") else "rebuild the bundle"
            raise BundleError(f"{self.root}: graph {name} has no {precision} variant (has {have}); {hint}")
        return entry
