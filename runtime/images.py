"""Image sources: a cache key and the SPEC section 1.4 reference preprocessing.

An `ImageSource` is built from the value of a request's image item and does
two things:

* `key` — a 32-byte SHA-256 digest of exactly what the decoder will consume,
  so that a shared visual-token cache can look an image up without decoding
  it. Encoded data (a file path or bytes) is hashed as its file bytes; pixel
  data (a PIL image or a uint8 array) as its RGB pixels and size. The hash
  input is a fixed tag followed by length-determined fields, so two different
  inputs can only share a key by a SHA-256 collision.
* `decode()` — the reference preprocessing, returning uint8 [S, S, 3]:

      im = PIL.ImageOps.exif_transpose(PIL.Image.open(src)).convert("RGB")
      pixels = np.asarray(im.resize((S, S), PIL.Image.BICUBIC), np.uint8)

  bit for bit, without the reference's two full-size copies (exif_transpose
  without an orientation, and convert("RGB") of an RGB image, each copy the
  decoded image): a 12 MP photo is 48 MB in Pillow, and every copy is page
  faults and memory traffic (docs/images.md).

Decode modes (`decode=`, part of the key, so a cache never mixes them):

* "exact" (default): SPEC section 1.4, bit-exact.
* "fast": a JPEG is decoded DCT-scaled by 1/s (Pillow `draft`, libjpeg
  scale_denom = s; s in 1, 2, 4, 8, the largest with both sides >= 2 x S),
  then the same orientation, RGB and bicubic resize. Other formats and pixel
  sources decode as in "exact". The deviation is measured in docs/images.md.
* "fastest": as "fast", with s the largest with both sides >= 1.5 x S (one
  DCT scale further for many camera photos: 1/8 instead of 1/4 at 12 MP, 1/4
  instead of 1/2 at 3 MP), so the bicubic resize has less margin against
  aliasing; ~25 % less decode time at 12 MP, its own (larger) deviation in
  docs/images.md. (At >= 1 x S the 1 MP photos fall below the INT8 gate.)

Every failure (unreadable, corrupted, truncated, too large, unsupported) is an
`ImageError` naming the request index, the image and the reason; the limits
live in `ImageLimits`.

Decisions (documented for users):

* A path and the bytes of the same file give the same key (they decode the
  same). A PIL image and a uint8 array with the same RGB pixels also share a
  key; encoded and pixel sources never do.
* A PIL image is treated like `Image.open(src)`: its EXIF orientation is
  applied, then it is converted to RGB. This happens when the source is built
  (the image is already in memory), so the source holds a snapshot that later
  edits to the caller's image cannot change, and the key covers palette,
  mode and orientation exactly.
* Animated GIF/WebP and multi-page TIFF: the first frame/page is used (what
  `Image.open` yields before any `seek`).
* Only the formats in `ImageLimits.formats` are opened (default: JPEG, PNG,
  GIF, WEBP, BMP, TIFF and AVIF where Pillow has it), so that rarely used
  decoders (EPS runs Ghostscript, for one) are never reached from a request.
* Dimensions are checked from the header, before any pixel is decoded.
  Pillow's own global bomb check still runs inside `Image.open`: its
  `DecompressionBombError` (and its warning, where warnings are errors)
  becomes an `ImageError`; the per-call `max_pixels` is the actual gate.
* Truncated files are refused as long as `PIL.ImageFile.LOAD_TRUNCATED_IMAGES`
  keeps its default (False); that switch is process-global and ours to leave.
"""

from __future__ import annotations

import hashlib
import io
import os
import stat
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageOps

from vlfront.errors import ImageError

_TAG_ENCODED = b"vlfront.image.v1/encoded\n"
_TAG_RGB = b"vlfront.image.v1/rgb\n"
# Each mode's keys have their own tags, so that keys of two modes never match.
_TAGS = {"exact": (_TAG_ENCODED, _TAG_RGB),
         "fast": (b"vlfront.image.v1/encoded+fast\n", b"vlfront.image.v1/rgb+fast\n"),
         "fastest": (b"vlfront.image.v1/encoded+fastest\n", b"vlfront.image.v1/rgb+fastest\n")}
DECODE_MODES = tuple(_TAGS)
# DCT scaling keeps both sides >= DRAFT_HALVES / 2 x the output size (0: no DCT scaling).
DRAFT_HALVES = {"exact": 0, "fast": 4, "fastest": 3}
DEFAULT_FORMATS = ("JPEG", "PNG", "GIF", "WEBP", "BMP", "TIFF", "AVIF")


@dataclass(frozen=True)
class ImageLimits:
    """Per-call limits on untrusted images.

    Attributes:
        max_bytes: largest file or bytes value read (default 64 MiB).
        max_pixels: largest width × height, checked from the header before
            decoding (default 64 MP; an RGB copy of that is 192 MB).
        max_side: largest width or height (default 32768).
        formats: Pillow format names that may be opened; None allows every
            format Pillow can read.
        allow_paths: whether a str/PathLike value is read as a file path.
            A server taking requests from the network should set False.
    """

    max_bytes: int = 64 << 20
    max_pixels: int = 64_000_000
    max_side: int = 32768
    formats: tuple[str, ...] | None = DEFAULT_FORMATS
    allow_paths: bool = True


def image_value_error(value) -> str | None:
    """Return why `value` cannot be an image item value, or None when its type is accepted."""
    if isinstance(value, (str, os.PathLike, bytes, bytearray, memoryview, Image.Image, np.ndarray)):
        return None
    return (
        f"image value of type {type(value).__name__} is not supported; "
        "pass a file path, encoded bytes, a PIL.Image or a uint8 HxWx3 numpy array"
    )


class ImageSource:
    """One image of a request: its cache key now, its pixels on demand.

    Args:
        value: a file path (str or os.PathLike), encoded bytes (bytes,
            bytearray, memoryview), a PIL.Image.Image, or a uint8 numpy array
            of shape [H, W, 3] taken as RGB.
        size: side of the square output (Config.image_size).
        limits: ImageLimits (defaults when None).
        index: the request's index in its batch, for messages.
        where: names the image in messages, e.g. "image 0 (message 1, item 2)".
        decode: "exact" (SPEC section 1.4), "fast" or "fastest" (module docstring).

    Attributes:
        key: 32-byte digest identifying what decode() consumes.

    Raises:
        ImageError: unsupported type, unreadable file, over a limit, a bad
            array, or (for a PIL image) one that cannot be converted.

    Example:
        >>> src = ImageSource("photo.jpg", size=224)
        >>> src.decode().shape
        (224, 224, 3)
    """

    __slots__ = ("key", "_data", "_rgb", "_size", "_limits", "_index", "_where", "_mode")

    def __init__(self, value, size: int = 224, limits: ImageLimits | None = None,
                 index: int | None = None, where: str = "image", decode: str = "exact"):
        if decode not in DECODE_MODES:
            raise ValueError(f"decode={decode!r}: choose one of {list(DECODE_MODES)}")
        self._mode = decode
        self._size = size
        self._limits = limits or ImageLimits()
        self._index = index
        self._where = where
        self._data: bytes | None = None       # encoded file bytes
        self._rgb: Image.Image | None = None  # RGB pixels before resizing
        reason = image_value_error(value)
        if reason:
            raise self._error(reason)
        if isinstance(value, (str, os.PathLike)):
            self._data = self._read_file(value)
        elif isinstance(value, (bytes, bytearray, memoryview)):
            self._data = self._take_bytes(value)
        elif isinstance(value, Image.Image):
            self._rgb = self._guarded(lambda: self._normalize(value))
        else:
            self._rgb = self._from_array(value)
        self.key = self._digest()

    def decode(self) -> np.ndarray:
        """Return the preprocessed pixels, uint8 [size, size, 3] (SPEC section 1.4).

        Raises:
            ImageError: corrupted, truncated, not an image, a refused format,
                or dimensions over the limits.
        """
        if self._rgb is not None:
            resized = self._guarded(lambda: self._rgb.resize((self._size, self._size), Image.BICUBIC))
        else:
            resized = self._guarded(self._decode_encoded)
        return np.array(resized, dtype=np.uint8)

    # -- building ---------------------------------------------------------

    def _read_file(self, value) -> bytes:
        if not self._limits.allow_paths:
            raise self._error("file paths are not accepted here (ImageLimits.allow_paths is False); "
                              "send the encoded image as bytes")
        path = os.fspath(value)
        shown = _shorten(repr(path))
        if isinstance(path, str) and (not path or "\0" in path):
            raise self._error(f"{shown} is not a usable file path "
                              "(a str image value is a path; pass bytes for encoded data)")
        try:
            # O_NONBLOCK: opening a FIFO must not hang; non-regular files are refused below.
            fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_BINARY", 0))
        except (OSError, ValueError) as e:
            raise self._error(f"cannot read {shown}: {_reason(e)} "
                              "(a str image value is a path; pass bytes for encoded data)") from e
        try:
            info = os.fstat(fd)
            if not stat.S_ISREG(info.st_mode):
                raise self._error(f"{shown} is not a regular file")
            self._check_byte_size(info.st_size, shown)
            with os.fdopen(fd, "rb", closefd=False) as f:
                data = f.read(self._limits.max_bytes + 1)  # the file may have grown since fstat
        except OSError as e:
            raise self._error(f"cannot read {shown}: {_reason(e)}") from e
        finally:
            os.close(fd)
        self._check_byte_size(len(data), shown)
        return data

    def _take_bytes(self, value) -> bytes:
        size = value.nbytes if isinstance(value, memoryview) else len(value)
        self._check_byte_size(size, "the bytes value")
        return bytes(value)  # a private copy: the caller's buffer may change later

    def _check_byte_size(self, n: int, what: str) -> None:
        if n == 0:
            raise self._error(f"{what} is empty (0 bytes)")
        if n > self._limits.max_bytes:
            raise self._error(f"{what} has {n} bytes, over the limit of {self._limits.max_bytes} "
                              "(ImageLimits.max_bytes); downscale or recompress it")

    def _check_dims(self, width: int, height: int) -> None:
        lim = self._limits
        if width <= 0 or height <= 0:
            raise self._error(f"image is {width}x{height}: it has no pixels")
        if max(width, height) > lim.max_side:
            raise self._error(f"image is {width}x{height}, a side over the limit of {lim.max_side} "
                              "(ImageLimits.max_side); downscale it")
        if width * height > lim.max_pixels:
            raise self._error(f"image is {width}x{height} = {width * height} pixels, over the limit of "
                              f"{lim.max_pixels} (ImageLimits.max_pixels); downscale it")

    def _normalize(self, im: Image.Image) -> Image.Image:
        self._check_dims(*im.size)  # header size: nothing decoded yet for a lazy image
        rgb = ImageOps.exif_transpose(im).convert("RGB")
        self._check_dims(*rgb.size)  # some decoders settle the size only on load
        return rgb

    def _from_array(self, arr: np.ndarray) -> Image.Image:
        if arr.dtype != np.uint8:
            raise self._error(f"array has dtype {arr.dtype}; need uint8 RGB (convert with "
                              "np.clip(a, 0, 255).astype(np.uint8) if the values are 0..255)")
        if arr.ndim != 3 or arr.shape[2] != 3:
            raise self._error(f"array has shape {arr.shape}; need [height, width, 3] (RGB)")
        self._check_dims(arr.shape[1], arr.shape[0])
        # A private C-ordered copy: later edits to the caller's array change nothing.
        return Image.fromarray(np.array(arr, dtype=np.uint8, order="C", copy=True))

    def _digest(self) -> bytes:
        h = hashlib.sha256()  # SHA-NI makes it ~30% faster than blake2b here
        tag_encoded, tag_rgb = _TAGS[self._mode]
        if self._data is not None:
            h.update(tag_encoded)
            h.update(self._data)
        else:
            w, hgt = self._rgb.size
            h.update(tag_rgb)
            h.update(w.to_bytes(8, "little") + hgt.to_bytes(8, "little"))
            h.update(self._rgb.tobytes())  # exactly w*h*3 bytes: the framing is unambiguous
        return h.digest()

    # -- decoding ---------------------------------------------------------

    def _decode_encoded(self) -> Image.Image:
        """Open, orient, convert and resize the encoded image (the resize needs it still open)."""
        formats = self._limits.formats
        if formats is not None:
            Image.init()
            formats = [f for f in formats if f.upper() in Image.OPEN]
        with Image.open(io.BytesIO(self._data), formats=formats) as im:
            self._check_dims(*im.size)
            # The whole file in one read and one decoder call instead of 64 KiB chunks: the same
            # pixels, and fewer GIL hand-offs between the threads decoding a batch (docs/images.md).
            im.decodermaxblock = max(im.decodermaxblock, len(self._data))
            side = DRAFT_HALVES[self._mode] * self._size // 2
            if side and im.format in ("JPEG", "MPO"):  # MPO: phone photos, JPEG + more frames
                im.draft(None, (side, side))  # DCT scaling only; Pillow keeps ISLOW
            # exif_transpose in place and convert only when not RGB: the reference's pixels
            # without its copies. `im` is ours (opened here), so changing it in place is safe.
            ImageOps.exif_transpose(im, in_place=True)
            rgb = im if im.mode == "RGB" else im.convert("RGB")
            self._check_dims(*rgb.size)
            return rgb.resize((self._size, self._size), Image.BICUBIC)

    def _guarded(self, fn):
        """Run a Pillow step; turn whatever it raises into an ImageError naming the reason."""
        try:
            return fn()
        except ImageError:
            raise
        except Image.UnidentifiedImageError as e:
            allowed = ", ".join(self._limits.formats) if self._limits.formats else "any Pillow format"
            raise self._error(f"not a readable image in an accepted format ({allowed})") from e
        except Image.DecompressionBombError as e:
            raise self._error(f"decompression bomb refused by Pillow: {e}") from e
        except Exception as e:  # noqa: BLE001 - decoders raise many types on malformed input
            raise self._error(f"cannot decode: {_reason(e)}") from e

    def _error(self, reason: str) -> ImageError:
        return ImageError(f"{self._where}: {reason}", self._index)


def _reason(e: BaseException) -> str:
    return _shorten(f"{type(e).__name__}: {e}")


def _shorten(text: str, limit: int = 120) -> str:
    return text if len(text) <= limit else text[: limit - 3] + "..."
