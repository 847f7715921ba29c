"""ImageSource: exact equality with the SPEC 1.4 reference, keys, and every refusal."""

from __future__ import annotations

import io
import os
import pathlib
import struct
import warnings
import zlib

import matplotlib
import numpy as np
import pytest
import skimage
from PIL import Image, ImageOps

from vlfront.errors import ImageError, RequestError
from vlfront.runtime.images import ImageLimits, ImageSource

SKIMAGE_DATA = pathlib.Path(skimage.__file__).parent / "data"
MPL_DATA = pathlib.Path(matplotlib.get_data_path()) / "sample_data"
ROCKET = SKIMAGE_DATA / "rocket.jpg"
HOPPER = MPL_DATA / "grace_hopper.jpg"
SAMPLES = [
    ROCKET,                                     # JPEG RGB
    HOPPER,                                     # JPEG RGB
    SKIMAGE_DATA / "hubble_deep_field.jpg",     # JPEG with an EXIF block
    SKIMAGE_DATA / "astronaut.png",             # PNG RGB
    SKIMAGE_DATA / "camera.png",                # PNG L
    SKIMAGE_DATA / "horse.png",                 # PNG RGBA
    SKIMAGE_DATA / "logo.png",                  # PNG RGBA
    MPL_DATA / "logo2.png",                     # PNG RGBA, wide
    SKIMAGE_DATA / "no_time_for_that_tiny.gif", # animated GIF, P
    SKIMAGE_DATA / "multipage.tif",             # two-page TIFF, L
]


def reference(src, size: int = 224) -> np.ndarray:
    """SPEC section 1.4, written out as the spec does."""
    with Image.open(src) as opened_src:
        im = ImageOps.exif_transpose(opened_src).convert("RGB")
    return np.asarray(im.resize((size, size), Image.BICUBIC), np.uint8)


def opened(path: pathlib.Path) -> Image.Image:
    """Image.open over the file's bytes: lazy like a file, no handle left open."""
    return Image.open(io.BytesIO(path.read_bytes()))


def encode(im: Image.Image, fmt: str, **kw) -> bytes:
    buf = io.BytesIO()
    im.save(buf, fmt, **kw)
    return buf.getvalue()


def png_with_size(width: int, height: int) -> bytes:
    """A valid tiny PNG whose IHDR claims width x height (CRC fixed up)."""
    data = bytearray(encode(Image.new("L", (1, 1)), "PNG"))
    ihdr = data[12:29]  # b"IHDR" + 13 bytes of fields
    ihdr[4:12] = struct.pack(">II", width, height)
    data[12:29] = ihdr
    data[29:33] = struct.pack(">I", zlib.crc32(bytes(ihdr)))
    return bytes(data)


@pytest.fixture(scope="module")
def rocket() -> Image.Image:
    with opened(ROCKET) as im:
        return im.convert("RGB")


# -- the reference, exactly -------------------------------------------------

@pytest.mark.parametrize("path", SAMPLES, ids=lambda p: p.name)
def test_real_photos_match_reference_for_every_source_type(path):
    expected = reference(path)
    assert expected.shape == (224, 224, 3)
    for value in (str(path), path, path.read_bytes(), bytearray(path.read_bytes()), opened(path)):
        got = ImageSource(value).decode()
        assert got.dtype == np.uint8 and got.shape == (224, 224, 3)
        np.testing.assert_array_equal(got, expected)


def test_output_size_follows_the_size_argument():
    np.testing.assert_array_equal(ImageSource(HOPPER, size=64).decode(), reference(HOPPER, 64))


def _modes(rocket: Image.Image):
    small = rocket.resize((96, 64))
    # 16-bit and float data: the reference clamps to 0..255 (it does not rescale), so keep
    # values around that range to have real content on both sides of the clamp.
    hi = np.asarray(small.convert("L"), np.uint16) * 2
    quant = small.quantize(16)
    return {
        "CMYK.jpg": encode(small.convert("CMYK"), "JPEG"),
        "CMYK.tif": encode(small.convert("CMYK"), "TIFF"),
        "I;16.png": encode(Image.fromarray(hi), "PNG"),
        "I;16.tif": encode(Image.fromarray(hi), "TIFF"),
        "I.tif": encode(Image.fromarray(hi.astype(np.int32) - 100), "TIFF"),
        "F.tif": encode(Image.fromarray(hi.astype(np.float32) / 1.7), "TIFF"),
        "L.png": encode(small.convert("L"), "PNG"),
        "LA.png": encode(small.convert("LA"), "PNG"),
        "P.png": encode(quant, "PNG"),
        "P-transparency.png": encode(quant, "PNG", transparency=3),
        "P-transparency.gif": encode(quant, "GIF", transparency=3),
        "RGBA.png": encode(small.convert("RGBA"), "PNG"),
        "RGBA.webp": encode(small.convert("RGBA"), "WEBP", lossless=True),
        "1.png": encode(small.convert("1"), "PNG"),
        "1.bmp": encode(small.convert("1"), "BMP"),
        "1.tif": encode(small.convert("1"), "TIFF"),
    }


@pytest.mark.parametrize("name", list(_modes(Image.new("RGB", (96, 64)))))
def test_every_mode_converts_like_the_reference(rocket, name):
    data = _modes(rocket)[name]
    expected = reference(io.BytesIO(data))
    assert expected.std() > 0  # real content, not a blank frame
    np.testing.assert_array_equal(ImageSource(data).decode(), expected)
    np.testing.assert_array_equal(ImageSource(Image.open(io.BytesIO(data))).decode(), expected)


def test_exif_orientation_is_applied(rocket):
    im = rocket.resize((120, 80))
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 CW to view"
    rotated = encode(im, "JPEG", quality=95, exif=exif.tobytes())
    plain = encode(im, "JPEG", quality=95)
    got = ImageSource(rotated).decode()
    np.testing.assert_array_equal(got, reference(io.BytesIO(rotated)))
    # The same JPEG data without the tag, turned by hand: identical pixels.
    by_hand = Image.open(io.BytesIO(plain)).transpose(Image.Transpose.ROTATE_270).convert("RGB")
    np.testing.assert_array_equal(got, np.asarray(by_hand.resize((224, 224), Image.BICUBIC)))
    assert not np.array_equal(got, ImageSource(plain).decode())
    np.testing.assert_array_equal(ImageSource(Image.open(io.BytesIO(rotated))).decode(), got)


def test_animated_gif_and_multipage_tiff_use_the_first_frame():
    frames = [Image.new("RGB", (40, 30), c) for c in ((250, 0, 0), (0, 250, 0), (0, 0, 250))]
    for fmt in ("GIF", "TIFF", "WEBP"):
        extra = {"lossless": True} if fmt == "WEBP" else {}
        data = encode(frames[0], fmt, save_all=True, append_images=frames[1:], **extra)
        assert Image.open(io.BytesIO(data)).n_frames == 3
        got = ImageSource(data).decode()
        np.testing.assert_array_equal(got, reference(io.BytesIO(data)))
        assert (got[..., 0] > 200).all() and (got[..., 1:] < 50).all(), fmt


def test_uint8_array_is_taken_as_rgb():
    arr = np.asarray(opened(HOPPER).convert("RGB"))
    expected = np.asarray(Image.fromarray(arr).resize((224, 224), Image.BICUBIC))
    np.testing.assert_array_equal(ImageSource(arr).decode(), expected)
    flipped = arr[:, ::-1]  # not C-contiguous
    expected = np.asarray(Image.fromarray(np.ascontiguousarray(flipped)).resize((224, 224), Image.BICUBIC))
    np.testing.assert_array_equal(ImageSource(flipped).decode(), expected)


def test_sources_snapshot_their_data():
    arr = np.asarray(opened(ROCKET).convert("RGB")).copy()
    buf = bytearray(ROCKET.read_bytes())
    pil = opened(ROCKET).convert("RGB")
    sources = [ImageSource(arr), ImageSource(buf), ImageSource(pil)]
    before = [(s.key, s.decode()) for s in sources]
    arr[:] = 0
    buf[:] = bytes(len(buf))
    pil.paste((0, 0, 0), (0, 0) + pil.size)
    for s, (key, pixels) in zip(sources, before):
        assert s.key == key
        np.testing.assert_array_equal(s.decode(), pixels)


# -- keys -------------------------------------------------------------------

def test_keys_equal_for_identical_data_across_source_types():
    data = ROCKET.read_bytes()
    keys = {ImageSource(v).key for v in (str(ROCKET), ROCKET, data, bytearray(data), memoryview(data))}
    assert len(keys) == 1 and len(keys.pop()) == 32
    rgb = opened(ROCKET).convert("RGB")
    assert ImageSource(rgb).key == ImageSource(np.asarray(rgb)).key == ImageSource(opened(ROCKET)).key


def test_keys_differ_for_different_data(rocket):
    data = ROCKET.read_bytes()
    arr = np.asarray(rocket)
    keys = [
        ImageSource(data).key,
        ImageSource(HOPPER).key,
        ImageSource(data + b"\0").key,       # trailing byte: a different file
        ImageSource(arr).key,                # pixels vs encoded: never shared
        ImageSource(arr[:, :-1]).key,        # one column fewer
        ImageSource(arr.reshape(arr.shape[1], arr.shape[0], 3)).key,  # same bytes, other shape
    ]
    changed = arr.copy()
    changed[0, 0, 0] ^= 1
    keys.append(ImageSource(changed).key)
    assert len(set(keys)) == len(keys)


def test_keys_cover_palette_and_orientation():
    indices = Image.fromarray(np.arange(64, dtype=np.uint8).reshape(8, 8), "P")
    a, b = indices.copy(), indices.copy()
    a.putpalette(bytes(range(192)) + bytes(576))
    b.putpalette(bytes(reversed(range(192))) + bytes(576))
    assert ImageSource(a).key != ImageSource(b).key
    im = Image.new("RGB", (30, 20), (10, 20, 30))
    im.paste((200, 0, 0), (0, 0, 10, 20))
    exif = Image.Exif()
    exif[0x0112] = 3
    rotated, plain = Image.open(io.BytesIO(encode(im, "PNG", exif=exif))), Image.open(io.BytesIO(encode(im, "PNG")))
    assert ImageSource(rotated).key != ImageSource(plain).key


# -- refusals ---------------------------------------------------------------

def _bad(value, match, limits=None):
    with pytest.raises(ImageError, match=match) as info:
        ImageSource(value, limits=limits, index=7, where="image 2 (message 1, item 0)").decode()
    assert isinstance(info.value, RequestError) and info.value.index == 7
    assert str(info.value).startswith("request 7: image 2 (message 1, item 0): ")


def test_refuses_empty_missing_and_non_files(tmp_path):
    empty = tmp_path / "empty.jpg"
    empty.write_bytes(b"")
    _bad(empty, "empty")
    _bad(b"", "empty")
    _bad(tmp_path / "missing.jpg", "cannot read .*No such file")
    _bad(str(tmp_path), "not a regular file")
    _bad("", "not a usable file path")
    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    _bad(fifo, "not a regular file")  # and does not block waiting for a writer


def test_refuses_files_that_are_not_images(tmp_path):
    _bad(MPL_DATA / "Stocks.csv", "not a readable image")
    _bad(b"hello, world", "not a readable image")
    _bad(SKIMAGE_DATA / "multipage_rgb.tif", "not a readable image")  # Pillow cannot identify it


def test_refuses_truncated_and_corrupted_files():
    data = ROCKET.read_bytes()
    _bad(data[: len(data) // 2], "truncated")
    _bad(data[:200], "cannot decode|not a readable image")
    png = bytearray((SKIMAGE_DATA / "astronaut.png").read_bytes())
    png[5000:5100] = bytes(100)  # inside IDAT: zlib/CRC damage
    _bad(bytes(png), "cannot decode")
    png = bytearray((SKIMAGE_DATA / "astronaut.png").read_bytes())
    png[16:20] = b"\xff\xff\xff\xff"  # IHDR width, CRC now wrong
    _bad(bytes(png), "cannot decode|not a readable image|pixels|side")


def test_refuses_too_many_pixels_from_the_header_before_decoding():
    _bad(png_with_size(1000, 1000), r"1000x1000 = 1000000 pixels, over the limit of 999999",
         ImageLimits(max_pixels=999_999))
    _bad(png_with_size(40_000, 1), "side over the limit of 32768")
    # Over Pillow's own bomb limit: its DecompressionBombError becomes ours.
    _bad(png_with_size(20_000, 20_000), "decompression bomb|over the limit")
    # Between Pillow's warning and error limits: our limit refuses; with warnings as errors too.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        _bad(png_with_size(10_000, 10_000), "100000000 pixels, over the limit of 64000000")
    with warnings.catch_warnings():
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        _bad(png_with_size(10_000, 10_000), "DecompressionBombWarning")


def test_limits_apply_to_pil_images_and_arrays():
    small = ImageLimits(max_pixels=100)
    _bad(Image.new("RGB", (11, 10)), "110 pixels", small)
    _bad(np.zeros((10, 11, 3), np.uint8), "11x10 = 110 pixels", small)
    np.testing.assert_array_equal(ImageSource(np.zeros((10, 10, 3), np.uint8), limits=small).decode(),
                                  np.zeros((224, 224, 3), np.uint8))


def test_refuses_files_over_the_byte_limit(tmp_path):
    limits = ImageLimits(max_bytes=100_000)
    assert ROCKET.stat().st_size > 100_000
    _bad(ROCKET, "112525 bytes, over the limit of 100000", limits)
    _bad(ROCKET.read_bytes(), "112525 bytes, over the limit of 100000", limits)
    _bad(memoryview(ROCKET.read_bytes()), "over the limit", limits)


def test_refuses_formats_outside_the_allowlist(rocket):
    pcx = encode(rocket, "PCX")
    _bad(pcx, "not a readable image in an accepted format")
    np.testing.assert_array_equal(ImageSource(pcx, limits=ImageLimits(formats=None)).decode(),
                                  reference(io.BytesIO(pcx)))


def test_paths_can_be_switched_off():
    _bad(ROCKET, "file paths are not accepted", ImageLimits(allow_paths=False))
    ImageSource(ROCKET.read_bytes(), limits=ImageLimits(allow_paths=False))


@pytest.mark.parametrize("arr, match", [
    (np.zeros((8, 8, 3), np.float32), "dtype float32"),
    (np.zeros((8, 8, 3), np.int64), "dtype int64"),
    (np.zeros((8, 8, 3), bool), "dtype bool"),
    (np.zeros((8, 8), np.uint8), r"shape \(8, 8\)"),
    (np.zeros((8, 8, 4), np.uint8), r"shape \(8, 8, 4\)"),
    (np.zeros((8, 8, 1), np.uint8), r"shape \(8, 8, 1\)"),
    (np.zeros((1, 8, 8, 3), np.uint8), r"shape \(1, 8, 8, 3\)"),
    (np.zeros((0, 8, 3), np.uint8), "no pixels"),
    (np.zeros((8, 0, 3), np.uint8), "no pixels"),
    (np.zeros((0,), np.uint8), r"shape \(0,\)"),
], ids=["float32", "int64", "bool", "HxW", "HxWx4", "HxWx1", "4-D", "0xW", "Hx0", "empty"])
def test_refuses_bad_arrays(arr, match):
    _bad(arr, match)


@pytest.mark.parametrize("value", [3, 1.5, None, ["a.jpg"], {"image": "a.jpg"}])
def test_refuses_unsupported_types(value):
    _bad(value, "is not supported")


def test_refuses_a_closed_pil_image():
    im = opened(ROCKET)
    im.close()
    _bad(im, "cannot decode")
