"""Calibration sets: which images calibrate the INT8 graph and which judge it.

A set comes from one of three places:

* nothing given: the real photos that ship with scikit-image (`skimage/data`)
  and matplotlib (`mpl-data/sample_data`), minus the synthetic ones in
  `SYNTHETIC` (test patterns, logos, a phantom);
* a folder: every image file below it (recursively, in path order);
* a manifest (`.csv`, `.parquet`, `.jsonl`/`.ndjson`, read with polars): one
  row per image, column `image` (a path, relative paths resolved against the
  manifest's folder) and optional column `text` (the prompt used for the
  end-to-end check; absent or empty means `DEFAULT_PROMPT`).

Images are identified by the sha256 of their file bytes: duplicates are kept
once, and the split into calibration and held-out images is a function of
those digests alone (the `held_out` smallest digests are held out), so the
same files always split the same way, whatever their names or order, and no
image can be on both sides.
"""

from __future__ import annotations

import hashlib
import math
import os
import pathlib
from dataclasses import dataclass

import numpy as np

from vlfront.errors import CalibrationError

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff")
MANIFEST_SUFFIXES = (".csv", ".parquet", ".jsonl", ".ndjson")
IMAGE_COLUMNS = ("image", "image_path", "path")
SYNTHETIC = frozenset({"chessboard_GRAY.png", "chessboard_RGB.png", "color.png", "logo.png", "logo2.png",
                       "phantom.png", "Minduka_Present_Blue_Pack.png"})
DEFAULT_PROMPT = "Describe this image."
HELD_OUT_FRACTION = 0.3
MAX_CALIBRATION_IMAGES = 256
MAX_HELD_OUT_IMAGES = 64


@dataclass(frozen=True)
class CalibrationImage:
    """One image of a set: where it is, its content digest and its prompt."""

    path: pathlib.Path
    sha256: str
    text: str = DEFAULT_PROMPT


@dataclass(frozen=True)
class CalibrationSet:
    """Calibration and held-out images (disjoint by content), each sorted by digest."""

    source: str
    calibration: tuple[CalibrationImage, ...]
    held_out: tuple[CalibrationImage, ...]

    def digest(self) -> str:
        """sha256 over the split (digests and prompts): what the manifest records as the data's identity."""
        h = hashlib.sha256()
        for side, images in (("calibration", self.calibration), ("held_out", self.held_out)):
            for im in images:
                h.update(f"{side}\0{im.sha256}\0{im.text}\n".encode())
        return h.hexdigest()

    def describe(self) -> dict:
        return {"source": self.source, "sha256": self.digest(), "calibration_images": len(self.calibration),
                "held_out_images": len(self.held_out),
                "split": "by sha256 of the file bytes: the smallest digests are held out; duplicates kept once",
                "held_out": [im.path.name for im in self.held_out]}


def preprocess(path: str | os.PathLike, size: int = 224) -> np.ndarray:
    """SPEC 1.4: exif_transpose -> RGB -> bicubic resize to size x size. Returns uint8 [size, size, 3].

    Raises:
        CalibrationError: the file cannot be decoded (names it and the reason).
    """
    from PIL import Image, ImageOps

    try:
        with Image.open(path) as im:
            rgb = ImageOps.exif_transpose(im).convert("RGB")
            return np.asarray(rgb.resize((size, size), Image.BICUBIC), np.uint8)
    except (OSError, ValueError, Image.DecompressionBombError) as e:
        raise CalibrationError(f"calibration image {path}: cannot be decoded ({e}); remove it from the set") from None


def pixels(images, size: int = 224) -> np.ndarray:
    """Preprocess `images` (CalibrationImage or paths) into uint8 [n, size, size, 3]."""
    arrays = [preprocess(getattr(im, "path", im), size) for im in images]
    return np.stack(arrays) if arrays else np.zeros((0, size, size, 3), np.uint8)


def default_image_paths() -> list[pathlib.Path]:
    """The real photos shipped with scikit-image and matplotlib (sorted, synthetic images left out)."""
    folders = []
    try:
        import skimage

        folders.append(pathlib.Path(skimage.__file__).parent / "data")
    except ImportError:
        pass
    try:
        import matplotlib

        folders.append(pathlib.Path(matplotlib.get_data_path()) / "sample_data")
    except ImportError:
        pass
    paths = [p for folder in folders if folder.is_dir() for p in sorted(folder.iterdir())
             if p.suffix.lower() in (".png", ".jpg", ".jpeg") and p.name not in SYNTHETIC and p.is_file()]
    if len(paths) < 2:
        raise CalibrationError("no default calibration photos found: install scikit-image and matplotlib "
                               "(`pip install vlfront[dev]`), or pass --data FOLDER|MANIFEST")
    return paths


def folder_images(folder: pathlib.Path) -> list[tuple[pathlib.Path, str | None]]:
    paths = sorted((p for p in folder.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file()),
                   key=lambda p: p.relative_to(folder).as_posix())
    return [(p, None) for p in paths]


def _read_table(path: pathlib.Path):
    import polars as pl

    suffix = path.suffix.lower()
    try:
        if suffix == ".csv":
            return pl.read_csv(path, infer_schema_length=0)  # every column as text: paths stay paths
        if suffix == ".parquet":
            return pl.read_parquet(path)
        return pl.read_ndjson(path)
    except Exception as e:  # polars raises many untyped errors for a malformed file
        raise CalibrationError(f"calibration manifest {path}: cannot be read as {suffix[1:]} ({e})") from None


def manifest_images(path: pathlib.Path) -> list[tuple[pathlib.Path, str | None]]:
    """Rows of a CSV/Parquet/JSONL manifest: (resolved image path, text or None).

    Raises:
        CalibrationError: no image column, an empty or missing path (names the row and the path).
    """
    table = _read_table(path)
    column = next((c for c in IMAGE_COLUMNS if c in table.columns), None)
    if column is None:
        raise CalibrationError(f"calibration manifest {path}: no image column; expected one of "
                               f"{list(IMAGE_COLUMNS)}, found {table.columns}")
    texts = table["text"].to_list() if "text" in table.columns else [None] * table.height
    rows = []
    for i, (rel, text) in enumerate(zip(table[column].to_list(), texts)):
        if rel is None or not str(rel).strip():
            raise CalibrationError(f"calibration manifest {path}: row {i} has an empty {column!r}")
        full = pathlib.Path(str(rel)).expanduser()
        full = full if full.is_absolute() else path.parent / full
        if not full.is_file():
            raise CalibrationError(f"calibration manifest {path}: row {i}: image {rel} not found (looked at {full})")
        rows.append((full, None if text is None else str(text)))
    return rows


def split(entries: list[tuple[pathlib.Path, str | None]], source: str, *,
          held_out_fraction: float = HELD_OUT_FRACTION, max_calibration: int = MAX_CALIBRATION_IMAGES,
          max_held_out: int = MAX_HELD_OUT_IMAGES) -> CalibrationSet:
    """Deduplicate by content and split by digest (see the module docstring).

    Raises:
        CalibrationError: fewer than two distinct images, or a fraction outside (0, 1).
    """
    if not 0.0 < held_out_fraction < 1.0:
        raise CalibrationError(f"held_out_fraction={held_out_fraction}: must lie strictly between 0 and 1")
    by_digest: dict[str, CalibrationImage] = {}
    for path, text in entries:
        try:
            digest = hashlib.sha256(path.read_bytes()).hexdigest()
        except OSError as e:
            raise CalibrationError(f"calibration image {path}: cannot be read ({e.strerror})") from None
        if digest not in by_digest:
            by_digest[digest] = CalibrationImage(path, digest, text.strip() if text and text.strip() else DEFAULT_PROMPT)
    images = [by_digest[d] for d in sorted(by_digest)]
    if len(images) < 2:
        raise CalibrationError(f"calibration data {source}: {len(images)} distinct image(s); at least 2 are needed "
                               "(some to calibrate, some held out to judge the result)")
    n_held = min(len(images) - 1, max(1, math.ceil(held_out_fraction * len(images))))
    held, calib = images[:n_held], images[n_held:]
    return CalibrationSet(source, tuple(calib[:max_calibration]), tuple(held[:max_held_out]))


def load_calibration_set(data: str | os.PathLike | None = None, **split_options) -> CalibrationSet:
    """The calibration set from `data` (None: the default photos; a folder; or a CSV/Parquet/JSONL manifest).

    Example:
        >>> s = load_calibration_set()            # scikit-image + matplotlib photos
        >>> len(s.calibration), len(s.held_out)
        (15, 7)
    Raises:
        CalibrationError: a missing path, an unknown manifest type, missing columns or files, too few images.
    """
    if data is None:
        return split([(p, None) for p in default_image_paths()], "default: scikit-image + matplotlib sample photos",
                     **split_options)
    path = pathlib.Path(data).expanduser()
    if path.is_dir():
        entries = folder_images(path)
    elif path.is_file() and path.suffix.lower() in MANIFEST_SUFFIXES:
        entries = manifest_images(path)
    elif path.is_file():
        raise CalibrationError(f"calibration data {path}: not a folder or a {'/'.join(MANIFEST_SUFFIXES)} manifest")
    else:
        raise CalibrationError(f"calibration data {path}: no such file or folder")
    if not entries:
        raise CalibrationError(f"calibration data {path}: no images found (looked for {', '.join(IMAGE_SUFFIXES)})")
    return split(entries, str(path), **split_options)
