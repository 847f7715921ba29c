"""Camera-size photos for `vlfront bench` and the decode tests, and the fast-decode deviation.

How the photos are made (nothing is downloaded): a scikit-image sample photo
(astronaut, coffee, chelsea, rocket; 451..640 px wide) is centre-cropped to 4:3,
upscaled with Lanczos to the camera size, given seeded Gaussian noise (sigma 3,
like sensor noise: an upscaled photo alone is smoother than a camera's), and
encoded as JPEG quality 90 (4:2:0) or PNG (`kind="upscaled"`). `kind="tiled"`
repeats the photo at its own resolution instead (no noise): every part of the
frame then has native detail, the hardest case for DCT-domain downscaling. Sizes (megapixels): 0.3 = 640x480,
1 = 1280x960, 3 = 2048x1536, 12 = 4032x3024 (a 12 MP phone camera).
`distinct` gives n byte-different copies (a JPEG COM segment or a PNG tEXt
chunk) with the same pixels, so that nothing is cached or deduplicated.
"""

from __future__ import annotations

import io
import pathlib
import struct
import zlib
from dataclasses import dataclass
from functools import lru_cache

import numpy as np

SIZES = {0.3: (640, 480), 1: (1280, 960), 3: (2048, 1536), 12: (4032, 3024)}
PHOTOS = ("astronaut.png", "coffee.png", "chelsea.png", "rocket.jpg")
NOISE_SIGMA = 3.0


def size_of(mp: float) -> tuple[int, int]:
    if mp not in SIZES:
        raise ValueError(f"{mp} MP: choose one of {sorted(SIZES)}")
    return SIZES[mp]


@lru_cache(maxsize=16)
def camera_photo(mp: float, fmt: str = "JPEG", photo: str = "rocket.jpg", seed: int = 0,
                 kind: str = "upscaled") -> bytes:
    """One camera-size photo, encoded (see the module docstring for how it is made)."""
    import skimage
    from PIL import Image

    w, h = size_of(mp)
    im = Image.open(pathlib.Path(skimage.__file__).parent / "data" / photo).convert("RGB")
    if kind == "tiled":
        a = np.asarray(im)
        tiled = np.tile(a, (h // a.shape[0] + 1, w // a.shape[1] + 1, 1))[:h, :w]
        return _encode(Image.fromarray(tiled), fmt)
    if kind != "upscaled":
        raise ValueError(f"kind={kind!r}: choose 'upscaled' or 'tiled'")
    sw, sh = im.size
    cw, ch = (sw, sw * 3 // 4) if sw * 3 // 4 <= sh else (sh * 4 // 3, sh)
    im = im.crop(((sw - cw) // 2, (sh - ch) // 2, (sw - cw) // 2 + cw, (sh - ch) // 2 + ch))
    px = np.asarray(im.resize((w, h), Image.LANCZOS), np.float32)
    px += np.random.default_rng(seed).normal(0.0, NOISE_SIGMA, px.shape).astype(np.float32)
    return _encode(Image.fromarray(np.clip(px + 0.5, 0, 255).astype(np.uint8)), fmt)


def _encode(im, fmt: str) -> bytes:
    out = io.BytesIO()
    im.save(out, fmt, **({"quality": 90} if fmt == "JPEG" else {"compress_level": 1}))
    return out.getvalue()


def distinct(data: bytes, n: int) -> list[bytes]:
    """n copies of an encoded JPEG or PNG that differ in bytes only (a comment), not in pixels."""
    out = []
    for i in range(n):
        text = f"vlfront bench image {i}".encode()
        if data[:2] == b"\xff\xd8":
            out.append(data[:2] + b"\xff\xfe" + (len(text) + 2).to_bytes(2, "big") + text + data[2:])
        else:  # PNG: a tEXt chunk right after IHDR (8-byte signature + 25-byte IHDR chunk)
            body = b"tEXt" + b"Comment\0" + text
            chunk = struct.pack(">I", len(body) - 4) + body + struct.pack(">I", zlib.crc32(body))
            out.append(data[:33] + chunk + data[33:])
    return out


def reference_pixels(data: bytes, size: int = 224) -> np.ndarray:
    """SPEC section 1.4, written out as a user would, for the baseline."""
    from PIL import Image, ImageOps

    im = ImageOps.exif_transpose(Image.open(io.BytesIO(data))).convert("RGB")
    return np.asarray(im.resize((size, size), Image.BICUBIC), np.uint8)


@dataclass
class Deviation:
    """Fast (or fastest) against exact decoding of one photo size (over PHOTOS)."""

    mode: str  # "fast" | "fastest"
    mp: float
    kind: str  # "upscaled" | "tiled" (module docstring)
    width: int
    height: int
    scale: int  # the JPEG DCT scale denominator the mode used
    max_abs: int  # pixel difference, 0..255
    mean_abs: float
    psnr_db: float  # of the 224x224x3 pixels, inf when equal
    cosine_min: float  # per visual token, through the bundle's patch_embed
    cosine_mean: float
    photos: int
    jpeg_psnr_db: float  # for scale: exact(JPEG q90) against exact(lossless PNG of the same pixels)

    def row(self) -> dict:
        return dict(self.__dict__)


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = float(np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2))
    return float("inf") if mse == 0 else 10.0 * np.log10(255.0**2 / mse)


def token_cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Cosine of each visual token of a against b ([..., D] float arrays), flattened."""
    a = a.reshape(-1, a.shape[-1]).astype(np.float64)
    b = b.reshape(-1, b.shape[-1]).astype(np.float64)
    return (a * b).sum(1) / np.maximum(np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1), 1e-30)


def deviation(runner, mp: float, kind: str = "upscaled", size: int = 224, photos=PHOTOS,
              mode: str = "fast") -> Deviation:
    """Decode each photo at `mp` exact and in `mode`; compare pixels and the visual tokens of `runner`."""
    from vlfront.runtime.images import DRAFT_HALVES, ImageSource

    exact, fast, lossless = [], [], []
    for k, photo in enumerate(photos):
        data = camera_photo(mp, "JPEG", photo, seed=k, kind=kind)
        exact.append(ImageSource(data, size).decode())
        fast.append(ImageSource(data, size, decode=mode).decode())
        lossless.append(ImageSource(camera_photo(mp, "PNG", photo, seed=k, kind=kind), size).decode())
    ex, fa = np.stack(exact), np.stack(fast)
    vt = lambda px: runner.infer("patch_embed", {"pixel_values": px})["visual_tokens"]  # noqa: E731
    cos = token_cosines(vt(ex), vt(fa))
    diff = np.abs(ex.astype(np.int16) - fa)
    w, h = size_of(mp)
    side = DRAFT_HALVES[mode] * size // 2
    scale = next(s for s in (8, 4, 2, 1) if min(w // side, h // side) >= s or s == 1)
    return Deviation(mode, mp, kind, w, h, scale, int(diff.max()), float(diff.mean()), psnr(ex, fa),
                     float(cos.min()), float(cos.mean()), len(photos), psnr(np.stack(lossless), ex))
