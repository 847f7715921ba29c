"""Calibration sets: folder and CSV/Parquet/JSONL manifests, refusals, the digest split, SPEC 1.4 preprocessing."""

import hashlib

import numpy as np
import polars as pl
import pytest
from PIL import Image, ImageOps

from vlfront.calibration.data import (DEFAULT_PROMPT, SYNTHETIC, default_image_paths, load_calibration_set,
                                      pixels, preprocess, split)
from vlfront.errors import CalibrationError


def _images(folder, n, size=(40, 30)):
    """n distinct small RGB images (PNG and JPEG alternately) under folder/imgs."""
    (folder / "imgs").mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    paths = []
    for i in range(n):
        p = folder / "imgs" / (f"im{i}.png" if i % 2 == 0 else f"im{i}.jpg")
        Image.fromarray(rng.integers(0, 256, (*size[::-1], 3), dtype=np.uint8)).save(p)
        paths.append(p)
    return paths


def _names(images):
    return sorted(im.path.name for im in images)


def test_folder_is_read_recursively_and_split_by_digest(tmp_path):
    paths = _images(tmp_path, 10)
    (tmp_path / "imgs" / "notes.txt").write_text("not an image")
    s = load_calibration_set(tmp_path)
    assert len(s.calibration) + len(s.held_out) == 10
    assert len(s.held_out) == 3  # ceil(0.3 * 10)
    digests = {hashlib.sha256(p.read_bytes()).hexdigest(): p.name for p in paths}
    # The held-out images are those with the smallest digests, whatever their names.
    assert _names(s.held_out) == sorted(digests[d] for d in sorted(digests)[:3])
    assert all(im.text == DEFAULT_PROMPT for im in s.calibration + s.held_out)


@pytest.mark.parametrize("fmt", ["csv", "parquet", "jsonl"])
def test_manifest_formats_resolve_relative_paths_and_keep_text(tmp_path, fmt):
    paths = _images(tmp_path, 6)
    rel = [p.relative_to(tmp_path).as_posix() for p in paths]
    texts = [f"prompt {i}" if i % 3 else None for i in range(6)]
    frame = pl.DataFrame({"image": rel, "text": texts})
    path = tmp_path / f"set.{fmt}"
    {"csv": frame.write_csv, "parquet": frame.write_parquet, "jsonl": frame.write_ndjson}[fmt](path)
    s = load_calibration_set(path)
    by_name = {im.path.name: im for im in s.calibration + s.held_out}
    assert sorted(by_name) == sorted(p.name for p in paths)
    assert by_name["im1.jpg"].text == "prompt 1"
    assert by_name["im0.png"].text == DEFAULT_PROMPT  # a missing text falls back to the default prompt
    assert all(im.path.is_absolute() or im.path.exists() for im in by_name.values())


def test_manifest_without_image_column_names_the_columns(tmp_path):
    path = tmp_path / "set.csv"
    pl.DataFrame({"file_name": ["a.png"], "text": ["x"]}).write_csv(path)
    with pytest.raises(CalibrationError, match=r"no image column; expected one of \['image'.*found \['file_name', 'text'\]"):
        load_calibration_set(path)


def test_manifest_with_missing_file_names_row_and_path(tmp_path):
    _images(tmp_path, 2)
    path = tmp_path / "set.jsonl"
    pl.DataFrame({"image": ["imgs/im0.png", "imgs/gone.png"]}).write_ndjson(path)
    with pytest.raises(CalibrationError, match=r"row 1: image imgs/gone.png not found"):
        load_calibration_set(path)


def test_manifest_with_empty_path_is_refused(tmp_path):
    path = tmp_path / "set.csv"
    path.write_text("image,text\n,hello\n")
    with pytest.raises(CalibrationError, match="row 0 has an empty 'image'"):
        load_calibration_set(path)


def test_refusals_name_the_problem(tmp_path):
    with pytest.raises(CalibrationError, match="no such file or folder"):
        load_calibration_set(tmp_path / "missing")
    (tmp_path / "set.xlsx").write_bytes(b"x")
    with pytest.raises(CalibrationError, match="not a folder or a"):
        load_calibration_set(tmp_path / "set.xlsx")
    (tmp_path / "empty").mkdir()
    with pytest.raises(CalibrationError, match="no images found"):
        load_calibration_set(tmp_path / "empty")
    one = _images(tmp_path / "one", 1)
    with pytest.raises(CalibrationError, match="1 distinct image"):
        load_calibration_set(one[0].parent)


def test_undecodable_image_is_named(tmp_path):
    bad = tmp_path / "broken.png"
    bad.write_bytes(b"\x89PNG not really")
    with pytest.raises(CalibrationError, match="broken.png: cannot be decoded"):
        preprocess(bad)


def test_duplicates_are_kept_once_and_split_never_overlaps(tmp_path):
    paths = _images(tmp_path, 8)
    copies = []
    for p in paths[:4]:  # the same bytes under other names
        c = p.with_name("copy_" + p.name)
        c.write_bytes(p.read_bytes())
        copies.append(c)
    entries = [(p, None) for p in paths + copies]
    s = split(entries, "test")
    digests_cal = {im.sha256 for im in s.calibration}
    digests_held = {im.sha256 for im in s.held_out}
    assert not digests_cal & digests_held
    assert len(digests_cal) + len(digests_held) == 8
    # Order and names of the inputs do not change the split.
    again = split(list(reversed(entries)), "test")
    assert [im.sha256 for im in again.held_out] == [im.sha256 for im in s.held_out]
    assert again.digest() == s.digest()


def test_split_options_are_checked(tmp_path):
    entries = [(p, None) for p in _images(tmp_path, 4)]
    with pytest.raises(CalibrationError, match="held_out_fraction"):
        split(entries, "x", held_out_fraction=1.0)
    assert len(split(entries, "x", held_out_fraction=0.01).held_out) == 1


def test_default_set_is_real_photos_split_without_overlap():
    paths = default_image_paths()
    assert len(paths) >= 10
    assert not {p.name for p in paths} & SYNTHETIC
    s = load_calibration_set()
    assert s.held_out and s.calibration
    assert not {im.sha256 for im in s.calibration} & {im.sha256 for im in s.held_out}
    assert s.digest() == load_calibration_set().digest()


def test_preprocess_is_spec_1_4_with_exif_orientation(tmp_path):
    rng = np.random.default_rng(1)
    im = Image.fromarray(rng.integers(0, 256, (30, 50, 3), dtype=np.uint8))
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90° clockwise on display
    path = tmp_path / "rotated.jpg"
    im.save(path, exif=exif, quality=95)
    got = preprocess(path, 224)
    with Image.open(path) as ref:
        want = np.asarray(ImageOps.exif_transpose(ref).convert("RGB").resize((224, 224), Image.BICUBIC), np.uint8)
    assert got.dtype == np.uint8 and got.shape == (224, 224, 3)
    np.testing.assert_array_equal(got, want)
    gray = tmp_path / "gray.png"
    Image.fromarray(rng.integers(0, 256, (20, 20), dtype=np.uint8)).save(gray)
    assert pixels([gray]).shape == (1, 224, 224, 3)
