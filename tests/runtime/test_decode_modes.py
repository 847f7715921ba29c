"""decode="exact" | "fast" | "fastest": what the DCT-scaled modes compute, how far they are from exact,
and that caches keep the modes apart.

The deviation rule: fast decoding must pass the same accuracy gate as an INT8
variant of the bundle (calibration.gate.Thresholds: per-token visual-token cosine
against exact, mean >= 0.999 and min >= 0.99, here through the tiny bundle), and
move pixels by less than one 8-bit level on average.
"""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image, ImageOps

from vlfront.calibration.gate import Thresholds
from vlfront.errors import VlfrontError
from vlfront.runtime import Runtime
from vlfront.runtime.bench_photos import PHOTOS, camera_photo, distinct, token_cosines
from vlfront.runtime.images import ImageSource
from vlfront.runtime.processor import Processor


def draft_reference(data: bytes, size: int = 224, side: int = 448) -> np.ndarray:
    """Fast mode written out with Pillow: DCT scaling to >= 2x the target (fastest: >= 1.5x), then SPEC 1.4."""
    with Image.open(io.BytesIO(data)) as im:
        im.draft(None, (side, side))
        out = ImageOps.exif_transpose(im).convert("RGB")
    return np.asarray(out.resize((size, size), Image.BICUBIC), np.uint8)


def exact_reference(data: bytes, size: int = 224) -> np.ndarray:
    with Image.open(io.BytesIO(data)) as im:
        out = ImageOps.exif_transpose(im).convert("RGB")
    return np.asarray(out.resize((size, size), Image.BICUBIC), np.uint8)


def oriented(data: bytes, orientation: int) -> bytes:
    exif = Image.Exif()
    exif[274] = orientation
    buf = io.BytesIO()
    Image.open(io.BytesIO(data)).save(buf, "JPEG", quality=90, exif=exif.tobytes())
    return buf.getvalue()


@pytest.fixture(scope="module")
def photo_3mp() -> bytes:
    return camera_photo(3, "JPEG", "coffee.png")


def test_fast_is_pillow_draft_then_spec_resize(photo_3mp):
    for data in (photo_3mp, oriented(photo_3mp, 6)):
        fast = ImageSource(data, decode="fast").decode()
        np.testing.assert_array_equal(fast, draft_reference(data))
        assert not np.array_equal(fast, exact_reference(data))  # 2048x1536 decodes at 1/2 scale
    assert ImageSource(oriented(photo_3mp, 6), decode="fast").decode().shape == (224, 224, 3)


def test_fast_scales_mpo_phone_photos_too(photo_3mp):
    im = Image.open(io.BytesIO(photo_3mp)).convert("RGB")
    buf = io.BytesIO()
    im.save(buf, "MPO", save_all=True, append_images=[im.resize((640, 480))])  # as phones write them
    data = buf.getvalue()
    assert Image.open(io.BytesIO(data)).format == "MPO"
    fast = ImageSource(data, decode="fast").decode()
    np.testing.assert_array_equal(fast, draft_reference(data))
    assert not np.array_equal(fast, ImageSource(data).decode())  # scaled, not decoded at full size


def test_fast_scale_keeps_both_sides_at_least_twice_the_target():
    for w, h, scale in ((895, 2000, 1), (896, 900, 2), (1791, 1792, 2), (1792, 1792, 4), (4032, 3024, 4),
                        (7200, 3584, 8)):
        buf = io.BytesIO()
        Image.new("RGB", (w, h)).save(buf, "JPEG")
        with Image.open(buf) as j:
            j.draft(None, (448, 448))
            assert j.size == ((w + scale - 1) // scale, (h + scale - 1) // scale)
            assert scale == 1 or min(j.size) >= 448


def test_fast_equals_exact_when_no_scaling_applies():
    small = camera_photo(0.3, "JPEG", "rocket.jpg")  # 640x480 < 896: scale 1
    png = camera_photo(1, "PNG", "chelsea.png")  # not JPEG: decoded exactly
    for data in (small, png):
        np.testing.assert_array_equal(ImageSource(data, decode="fast").decode(), exact_reference(data))
    arr = np.asarray(Image.open(io.BytesIO(small)).convert("RGB"))
    np.testing.assert_array_equal(ImageSource(arr, decode="fast").decode(), ImageSource(arr).decode())


def test_exact_mode_stays_bit_exact_on_camera_photos(photo_3mp):
    for data in (photo_3mp, oriented(photo_3mp, 8), camera_photo(1, "PNG", "astronaut.png")):
        np.testing.assert_array_equal(ImageSource(data).decode(), exact_reference(data))


@pytest.mark.parametrize("mode", ["fast", "fastest"])
@pytest.mark.parametrize("mp,kind", [(1, "upscaled"), (3, "tiled"), (12, "upscaled")])
def test_fast_deviation_within_the_int8_gate(tiny_bundle, mp, kind, mode):
    gate = Thresholds()
    photos = PHOTOS[:2] if mp == 12 else PHOTOS
    with Runtime.load(tiny_bundle, cache_bytes=0) as rt:
        exact, fast = [], []
        for k, name in enumerate(photos):
            data = camera_photo(mp, "JPEG", name, seed=k, kind=kind)
            exact.append(ImageSource(data).decode())
            fast.append(ImageSource(data, decode=mode).decode())
        ex, fa = np.stack(exact), np.stack(fast)
        vt = lambda px: rt.runner.infer("patch_embed", {"pixel_values": px})["visual_tokens"]  # noqa: E731
        cos = token_cosines(vt(ex), vt(fa))
    assert not np.array_equal(ex, fa)  # the scaled path really ran
    assert np.abs(ex.astype(np.int16) - fa).mean() < 1.0
    assert cos.mean() >= gate.mean_cosine and cos.min() >= gate.min_cosine, (cos.mean(), cos.min())


def test_exact_and_fast_never_share_a_key(photo_3mp, tokenizer_json):
    arr = np.zeros((8, 8, 3), np.uint8)
    for value in (photo_3mp, arr):
        keys = {ImageSource(value, decode=m).key for m in ("exact", "fast", "fastest")}
        assert len(keys) == 3
        assert ImageSource(value).key == ImageSource(value, decode="exact").key
    with pytest.raises(ValueError, match="decode='quick'"):
        ImageSource(photo_3mp, decode="quick")


def test_runtime_caches_exact_and_fast_as_two_entries(tiny_bundle, photo_3mp):
    req = [{"role": "user", "content": [{"type": "image", "image": photo_3mp}, {"type": "text", "text": "hi"}]}]
    with Runtime.load(tiny_bundle, decode="exact") as ex, Runtime.load(tiny_bundle, decode="fast") as fa:
        assert (ex.decode, fa.decode) == ("exact", "fast")
        fa.cache = ex.cache  # one cache behind both, as a shared (Redis) cache would be
        out_e, out_f = ex.embed([req]), fa.embed([req])
        assert len(ex.cache) == 2 and ex.cache.stats()["hits"] == 0  # the same photo, once per mode
        np.testing.assert_array_equal(out_e.pixel_values[0], exact_reference(photo_3mp))
        np.testing.assert_array_equal(out_f.pixel_values[0], draft_reference(photo_3mp))
        again_e, again_f = ex.embed([req]), fa.embed([req])
        assert ex.cache.stats()["hits"] == 2 and len(ex.cache) == 2
        np.testing.assert_array_equal(again_e.inputs_embeds, out_e.inputs_embeds)
        np.testing.assert_array_equal(again_f.inputs_embeds, out_f.inputs_embeds)
        assert not np.array_equal(out_e.inputs_embeds, out_f.inputs_embeds)


def test_decode_mode_is_checked(tiny_bundle, qwen_tokenizer):
    with pytest.raises(VlfrontError, match="decode='draft'"):
        Runtime.load(tiny_bundle, decode="draft")
    with Runtime.load(tiny_bundle) as rt:
        config = rt.config
    data = camera_photo(0.3)
    lay = Processor(qwen_tokenizer, config, decode="fast").layout(
        [{"role": "user", "content": [{"type": "image", "image": data}]}])
    assert lay.images[0].key == ImageSource(data, decode="fast").key != ImageSource(data).key


def test_fastest_scales_to_at_least_one_and_a_half_times_the_target():
    """fastest: DCT scaling to >= 1.5x the target (Pillow draft to 336), then SPEC 1.4: 12 MP and 3 MP one
    DCT scale further than fast (1/8, 1/4), 1 MP as fast (1/2)."""
    for mp, fastest_scale, same_as_fast in ((3, 4, False), (12, 8, False), (1, 2, True)):
        data = camera_photo(mp, "JPEG", "coffee.png")
        got = ImageSource(data, decode="fastest").decode()
        np.testing.assert_array_equal(got, draft_reference(data, side=336))
        with Image.open(io.BytesIO(data)) as j:
            w, h = j.size
            j.draft(None, (336, 336))
            assert j.size == ((w + fastest_scale - 1) // fastest_scale, (h + fastest_scale - 1) // fastest_scale)
            assert min(j.size) >= 336
        assert np.array_equal(got, ImageSource(data, decode="fast").decode()) == same_as_fast
