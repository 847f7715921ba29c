"""Bundle validation at load: tampered, missing and escaping files are refused with a clear error."""

import json
import os
import shutil

import pytest

from vlfront.errors import BundleError
from vlfront.runtime import Runtime
from vlfront.runtime.bundle import Bundle


@pytest.fixture
def bundle(tiny_bundle, tmp_path):
    dst = tmp_path / "b"
    shutil.copytree(tiny_bundle, dst)
    return dst


def _manifest(bundle):
    return json.loads((bundle / "manifest.json").read_text())


def _write(bundle, m):
    (bundle / "manifest.json").write_text(json.dumps(m))


def test_valid_bundle_loads(bundle):
    Bundle.open(bundle).verify_all()
    Runtime.load(bundle).close()


@pytest.mark.parametrize("name", ["weights.safetensors", "fusion.onnx", "patch_embed.onnx", "tokenizer.json"])
def test_one_flipped_byte_is_refused(bundle, name):
    data = bytearray((bundle / name).read_bytes())
    data[len(data) // 2] ^= 0x01
    (bundle / name).write_bytes(bytes(data))
    with pytest.raises(BundleError, match=f"{name} sha256 .* tampered"):
        Runtime.load(bundle)


@pytest.mark.parametrize("name", ["weights.safetensors", "tokenizer.json", "fusion.onnx"])
def test_missing_or_truncated_file_is_refused(bundle, name):
    with open(bundle / name, "r+b") as f:
        f.truncate(100)
    with pytest.raises(BundleError, match=f"{name} has 100 bytes"):
        Runtime.load(bundle)
    (bundle / name).unlink()
    with pytest.raises(BundleError, match=f"{name} is missing"):
        Runtime.load(bundle)


@pytest.mark.parametrize("path", ["../outside.onnx", "/etc/passwd", "a/../../x", "..\\x"])
def test_paths_leaving_the_bundle_are_refused(bundle, path):
    m = _manifest(bundle)
    m["files"][path] = {"sha256": "0" * 64, "size": 1}
    _write(bundle, m)
    with pytest.raises(BundleError, match="leaves the bundle"):
        Bundle.open(bundle)


def test_graph_pointing_outside_is_refused(bundle, tmp_path):
    m = _manifest(bundle)
    m["graphs"]["fusion"]["fp32"]["file"] = "../evil.onnx"
    _write(bundle, m)
    with pytest.raises(BundleError, match="not listed|leaves the bundle"):
        Runtime.load(bundle)


def test_symlink_is_refused(bundle, tmp_path):
    target = tmp_path / "elsewhere.json"
    shutil.copy(bundle / "tokenizer.json", target)
    (bundle / "tokenizer.json").unlink()
    os.symlink(target, bundle / "tokenizer.json")
    with pytest.raises(BundleError, match="symbolic link"):
        Bundle.open(bundle)


@pytest.mark.parametrize("edit, message", [
    (lambda m: m.update(schema_version=2), "schema_version 2.*rebuild"),
    (lambda m: m.update(format="other"), "not a vlfront bundle"),
    (lambda m: m["config"].update(hidden_size=63), "hidden_size=63"),
    (lambda m: m["special_ids"].update(image_pad=1), "special_ids"),
    (lambda m: m.pop("graphs"), "lacks the 'graphs' section"),
])
def test_manifest_problems_are_named(bundle, edit, message):
    m = _manifest(bundle)
    edit(m)
    _write(bundle, m)
    with pytest.raises(BundleError, match=message):
        Bundle.open(bundle)


def test_garbage_manifest_and_no_manifest(bundle, tmp_path):
    (bundle / "manifest.json").write_bytes(b"\xff\xfe{")
    with pytest.raises(BundleError, match="not valid JSON"):
        Bundle.open(bundle)
    with pytest.raises(BundleError, match="no manifest.json"):
        Bundle.open(tmp_path / "empty")


def test_missing_precision_says_how_to_get_it(bundle):
    with pytest.raises(BundleError, match="no int8 variant.*vlfront calibrate"):
        Runtime.load(bundle, precision="int8")
    with pytest.raises(BundleError, match="precision='int4'"):
        Runtime.load(bundle, precision="int4")
    with pytest.raises(BundleError, match="backend 'tpu'"):
        Runtime.load(bundle, backend="tpu")
