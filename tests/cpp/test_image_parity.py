"""C++ image preprocessing (libjpeg-turbo/libpng + the Pillow BICUBIC port) vs the SPEC 1.4 reference.

Requirement: within 1 intensity level of the reference on >= 99.9% of pixels
over the sample photos; the test also reports how many are exactly equal.
"""

from __future__ import annotations

import io
import pathlib
import struct
import zlib

import matplotlib
import numpy as np
import pytest
import skimage
from PIL import Image, ImageOps

from vlfront_ctypes import CppError

SKIMAGE_DATA = pathlib.Path(skimage.__file__).parent / "data"
MPL_DATA = pathlib.Path(matplotlib.get_data_path()) / "sample_data"
PHOTOS = sorted(p for d in (SKIMAGE_DATA, MPL_DATA) for p in d.iterdir() if p.suffix in (".jpg", ".png"))


def reference(data: bytes, size: int = 224) -> np.ndarray:
    with Image.open(io.BytesIO(data)) as src:
        im = ImageOps.exif_transpose(src).convert("RGB")
    return np.asarray(im.resize((size, size), Image.BICUBIC), np.uint8)


def encode(im: Image.Image, fmt: str, **kw) -> bytes:
    buf = io.BytesIO()
    im.save(buf, fmt, **kw)
    return buf.getvalue()


def png_rgb16(arr: np.ndarray) -> bytes:
    """A 16-bit RGB PNG (Pillow cannot write one), big-endian samples."""
    h, w, _ = arr.shape
    raw = b"".join(b"\0" + arr[y].astype(">u2").tobytes() for y in range(h))
    def chunk(tag, data):
        return struct.pack(">I", len(data)) + tag + data + struct.pack(">I", zlib.crc32(tag + data))
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 16, 2, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b""))


def with_orientation(im: Image.Image, fmt: str, orientation: int) -> bytes:
    exif = Image.Exif()
    exif[274] = orientation
    return encode(im, fmt, exif=exif.tobytes())


def variants() -> dict[str, bytes]:
    rng = np.random.default_rng(0)
    with Image.open(SKIMAGE_DATA / "rocket.jpg") as im:
        rocket = im.convert("RGB")
    small = rocket.resize((97, 61))
    noise = Image.fromarray(rng.integers(0, 256, (300, 413, 3), dtype=np.uint8))
    out = {f"jpeg_orientation_{o}": with_orientation(rocket, "JPEG", o) for o in range(1, 9)}
    out.update({f"png_orientation_{o}": with_orientation(small, "PNG", o) for o in (3, 6, 8)})
    xmp = b'<x:xmpmeta xmlns:x="adobe:ns:meta/"><rdf:Description tiff:Orientation="6"/></x:xmpmeta>'
    out["jpeg_xmp_orientation_6"] = encode(rocket, "JPEG", xmp=xmp)
    out["jpeg_gray"] = encode(rocket.convert("L"), "JPEG")
    out["jpeg_cmyk"] = encode(rocket.convert("CMYK"), "JPEG")
    out["jpeg_progressive"] = encode(rocket, "JPEG", progressive=True, quality=90)
    for sub in (0, 1, 2):  # 4:4:4, 4:2:2, 4:2:0
        out[f"jpeg_subsampling_{sub}"] = encode(noise, "JPEG", subsampling=sub, quality=75)
    out["png_noise"] = encode(noise, "PNG")
    out["png_1bit"] = encode(small.convert("1"), "PNG")
    out["png_L"] = encode(small.convert("L"), "PNG")
    out["png_LA"] = encode(small.convert("LA"), "PNG")
    out["png_RGBA"] = encode(small.convert("RGBA"), "PNG")
    out["png_P"] = encode(small.convert("P", palette=Image.ADAPTIVE, colors=200), "PNG")
    pal4 = small.convert("P", palette=Image.ADAPTIVE, colors=16)
    out["png_P_4bit_transparency"] = encode(pal4, "PNG", bits=4, transparency=3)
    out["png_I16"] = encode(Image.fromarray(rng.integers(0, 400, (40, 50), dtype=np.uint16)), "PNG")
    out["png_RGB16"] = png_rgb16(rng.integers(0, 65536, (33, 47, 3), dtype=np.uint16))
    out["png_224_identity"] = encode(noise.crop((0, 0, 224, 224)), "PNG")
    out["png_224_wide_vertical_only"] = encode(noise.crop((0, 0, 224, 300)), "PNG")
    out["png_1x1"] = encode(Image.new("RGB", (1, 1), (10, 200, 30)), "PNG")
    out["png_thin_3x1000"] = encode(noise.resize((3, 1000)), "PNG")
    out["png_upscale_50"] = encode(noise.resize((50, 50)), "PNG")
    return out


def compare(cpp_lib, data: bytes) -> tuple[float, float, int]:
    want = reference(data)
    got = cpp_lib.preprocess(data)
    diff = np.abs(got.astype(np.int16) - want.astype(np.int16))
    return float((diff <= 1).mean()), float((diff == 0).mean()), int(diff.max())


def test_sample_photos_within_one_level(cpp_lib):
    within, exact, n = 0.0, 0.0, 0
    for path in PHOTOS:
        w, e, worst = compare(cpp_lib, path.read_bytes())
        assert w >= 0.999, f"{path.name}: only {w:.4%} within 1 level (max diff {worst})"
        within, exact, n = within + w, exact + e, n + 1
    print(f"\n[cpp images] {n} sample photos: {within / n:.4%} within 1 level, {exact / n:.4%} exactly equal")
    assert n >= 10


@pytest.mark.parametrize("name", sorted(variants()))
def test_format_variants(cpp_lib, name):
    w, e, worst = compare(cpp_lib, variants()[name])
    assert w >= 0.999, f"{name}: {w:.4%} within 1 level, {e:.4%} exact, max diff {worst}"


@pytest.mark.parametrize("data, message", [
    (b"", "empty"),
    (b"not an image at all", "not a readable image"),
    (b"GIF89a" + bytes(20), "not a readable image"),  # GIF: the Python runtime decodes it, C++ does not
])
def test_refusals(cpp_lib, data, message):
    with pytest.raises(CppError, match=message) as e:
        cpp_lib.preprocess(data)
    assert e.value.code == "IMAGE"


def test_truncated_files_are_refused_like_pillow(cpp_lib):
    for path in (SKIMAGE_DATA / "rocket.jpg", SKIMAGE_DATA / "astronaut.png"):
        data = path.read_bytes()[: len(path.read_bytes()) // 2]
        with pytest.raises(Exception):
            reference(data)
        with pytest.raises(CppError) as e:
            cpp_lib.preprocess(data)
        assert e.value.code == "IMAGE" and "truncated" in e.value.message, e.value.message
