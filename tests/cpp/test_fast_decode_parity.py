"""decode="fast" in C++ (libjpeg scale_denom) against Python's (Pillow draft), and the C++ fast key.

Both use libjpeg-turbo's scaled ISLOW IDCT with fancy upsampling, so they agree
bit for bit wherever the exact paths do (measured: every camera photo and
variant here); the requirement is that of the exact parity test (>= 99.9% of
pixels within 1 level), and fast must never disagree more than exact does.
"""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from vlfront.runtime.bench_photos import camera_photo
from vlfront.runtime.images import ImageSource
from vlfront_ctypes import Runtime


def encode(im: Image.Image, **kw) -> bytes:
    buf = io.BytesIO()
    im.save(buf, "JPEG", **kw)
    return buf.getvalue()


def variants() -> dict[str, bytes]:
    base = Image.open(io.BytesIO(camera_photo(3, "JPEG", "astronaut.png"))).convert("RGB")
    exif = Image.Exif()
    exif[274] = 6
    out = {f"camera_{mp}mp": camera_photo(mp, "JPEG", "coffee.png") for mp in (1, 3, 12)}
    out["tiled_3mp"] = camera_photo(3, "JPEG", "rocket.jpg", kind="tiled")
    out["orientation_6"] = encode(base, quality=90, exif=exif.tobytes())
    out["gray"] = encode(base.convert("L"), quality=90)
    out["cmyk"] = encode(base.resize((1000, 900)).convert("CMYK"))
    out["progressive"] = encode(base, quality=85, progressive=True)
    for sub in (0, 1):  # 4:4:4, 4:2:2 (4:2:0 is the default above)
        out[f"subsampling_{sub}"] = encode(base, subsampling=sub, quality=90)
    mpo = io.BytesIO()
    base.save(mpo, "MPO", save_all=True, append_images=[base.resize((640, 480))])  # phone cameras' format
    out["mpo"] = mpo.getvalue()
    out["odd_1999x1001"] = encode(base.resize((1999, 1001)), quality=90)  # ceil(w / s) edges
    out["scale_8_3600x3600"] = encode(base.resize((3600, 3600)), quality=80)
    return out


def pixels(rt: Runtime, data: bytes) -> np.ndarray:
    return rt.process([[{"role": "user", "content": [{"type": "image", "image": data}]}]])["pixel_values"][0]


@pytest.fixture(scope="module")
def runtimes(cpp_lib, tiny_bundle):
    with (Runtime(cpp_lib, tiny_bundle, decode="exact") as ex, Runtime(cpp_lib, tiny_bundle, decode="fast") as fa,
          Runtime(cpp_lib, tiny_bundle, decode="fastest") as fs):
        yield {"exact": ex, "fast": fa, "fastest": fs}


@pytest.mark.parametrize("mode", ["fast", "fastest"])
def test_fast_matches_python(runtimes, mode):
    ex, fa = runtimes["exact"], runtimes[mode]
    equal = 0
    for name, data in variants().items():
        want_fast, want_exact = ImageSource(data, decode=mode).decode(), ImageSource(data).decode()
        got_fast, got_exact = pixels(fa, data), pixels(ex, data)
        diff = np.abs(got_fast.astype(np.int16) - want_fast)
        assert (diff <= 1).mean() >= 0.999, f"{name}: max diff {diff.max()}"
        exact_diff = np.abs(got_exact.astype(np.int16) - want_exact)
        assert (diff != 0).sum() <= (exact_diff != 0).sum(), f"{name}: fast disagrees more than exact"
        if name.startswith(("camera", "tiled", "orientation", "odd", "scale", "mpo")):
            assert not np.array_equal(want_fast, want_exact), f"{name}: fast did not scale"
        equal += int(diff.max() == 0)
    print(f"\n[cpp {mode} decode] {equal}/{len(variants())} variants bit-exact with Python's {mode} path")


def test_fast_is_its_own_cache_entry(cpp_lib, tiny_bundle):
    data = camera_photo(1, "JPEG", "chelsea.png")
    req = [{"role": "user", "content": [{"type": "image", "image": data}]}]
    with Runtime(cpp_lib, tiny_bundle, decode="fast") as fa:
        a = fa.embed([req])
        b = fa.embed([req])
        assert fa.get_int("cache_entries") == 1 and fa.get_int("cache_hits") == 1
    np.testing.assert_array_equal(a["inputs_embeds"], b["inputs_embeds"])
    np.testing.assert_array_equal(a["pixel_values"][0], ImageSource(data, decode="fast").decode())


def test_decode_option_is_checked(cpp_lib, tiny_bundle):
    from vlfront_ctypes import CppError

    with pytest.raises(CppError, match="decode='draft'.*'exact', 'fast', 'fastest'"):
        Runtime(cpp_lib, tiny_bundle, decode="draft")


def test_modes_are_separate_cache_entries_in_cpp_too(cpp_lib, tiny_bundle):
    """The same photo through fast and fastest: two keys (Python's), so a shared cache never mixes them."""
    data = camera_photo(12, "JPEG", "chelsea.png")
    req = [{"role": "user", "content": [{"type": "image", "image": data}]}]
    with Runtime(cpp_lib, tiny_bundle, decode="fastest") as fs:
        out = fs.embed([req])
        np.testing.assert_array_equal(out["pixel_values"][0], ImageSource(data, decode="fastest").decode())
        assert not np.array_equal(out["pixel_values"][0], ImageSource(data, decode="fast").decode())
