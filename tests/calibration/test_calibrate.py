"""calibrate_bundle on the tiny preset: pass and fail paths, manifest and report, recalibration, failures."""

import hashlib
import json
import shutil

import numpy as np
import polars as pl
import pytest

from vlfront.calibration import calibrate_bundle
from vlfront.calibration import calibrate as calibrate_module
from vlfront.calibration.manifest import write_manifest
from vlfront.errors import BundleError, CalibrationError
from vlfront.runtime import Runtime
from vlfront.runtime.bundle import Bundle


def _manifest(root):
    return json.loads((root / "manifest.json").read_text())


def _digests(root):
    return {p.relative_to(root).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


def _request(image):
    return [{"role": "user", "content": [{"type": "image", "image": image}, {"type": "text", "text": "What is it?"}]}]


def test_calibrated_bundle_validates_and_lists_the_variants(calibrated_bundle):
    bundle = Bundle.open(calibrated_bundle)
    bundle.verify_all()
    graphs = bundle.manifest["graphs"]
    assert graphs["patch_embed"]["int8"]["file"] == "patch_embed.int8.onnx"
    assert graphs["patch_embed"]["fp16"]["file"] == "patch_embed.fp16.onnx"
    assert graphs["fusion"]["fp16"]["file"] == "fusion.fp16.onnx"
    assert graphs["fusion"]["int8"] == graphs["fusion"]["fp32"]  # fusion is served in fp32 at int8
    for graph in ("patch_embed", "fusion"):
        for precision in ("int8", "fp16"):
            entry = graphs[graph][precision]
            assert entry["opset"] == 17
            assert entry["inputs"] == graphs[graph]["fp32"]["inputs"]
            assert entry["outputs"] == graphs[graph]["fp32"]["outputs"]
    section = bundle.manifest["calibration"]
    assert section["precisions"] == {"int8": {"shipped": True, "failures": []}, "fp16": {"shipped": True, "failures": []}}
    assert section["thresholds"] == {"mean_cosine": 0.9995, "min_cosine": 0.999}
    assert section["variants"]["patch_embed"]["int8"]["verdict"] == "pass"
    assert set(section["quantization"]["patch_embed"]["float"])  # the float tensors are recorded
    e2e = section["figures"]["int8"]["end_to_end/inputs_embeds[image tokens]"]
    assert e2e["cosine_mean"] >= 0.9995 and e2e["cosine_min"] >= 0.999 and e2e["tokens"] == 196 * 7
    assert {"reports/calibration.parquet", "reports/calibration.md"} <= set(bundle.manifest["files"])


def test_report_has_one_row_per_figure(calibrated_bundle):
    frame = pl.read_parquet(calibrated_bundle / "reports/calibration.parquet")
    assert frame.height == 8
    assert set(frame["precision"]) == {"int8", "fp16"}
    assert set(frame["scope"]) == {"patch_embed", "fusion", "end_to_end"}
    assert frame["verdict"].to_list() == ["pass"] * 8
    md = (calibrated_bundle / "reports/calibration.md").read_text()
    assert "| int8 | patch_embed | visual_tokens |" in md and "| fp16 | yes |" in md


def test_runtime_serves_int8_and_fp16_close_to_fp32(calibrated_bundle):
    import skimage

    image = str(next(iter(sorted((__import__("pathlib").Path(skimage.__file__).parent / "data").glob("coffee.png")))))
    outs = {}
    for precision in ("fp32", "int8", "fp16"):
        with Runtime.load(calibrated_bundle, backend="onnxruntime", precision=precision) as rt:
            outs[precision] = rt.embed([_request(image)])
    ref = outs["fp32"].inputs_embeds[0]
    mask = outs["fp32"].attention_mask[0].astype(bool)
    gate = Bundle.open(calibrated_bundle).manifest["calibration"]["thresholds"]  # the bundle's own gate
    for precision in ("int8", "fp16"):
        got = outs[precision].inputs_embeds[0]
        assert got.dtype == np.float32 and got.shape == ref.shape
        a, b = got[mask].astype(np.float64), ref[mask].astype(np.float64)
        cos = (a * b).sum(1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))
        assert cos.min() >= gate["min_cosine"] and cos.mean() >= gate["mean_cosine"], precision


def test_impossible_gate_ships_nothing_and_says_why(fresh_bundle, quiet):
    section = calibrate_bundle(fresh_bundle, mean_cosine=1.0, min_cosine=1.0, progress=quiet)
    bundle = Bundle.open(fresh_bundle)
    bundle.verify_all()
    assert set(bundle.manifest["graphs"]["patch_embed"]) == {"fp32"}
    assert set(bundle.manifest["graphs"]["fusion"]) == {"fp32"}
    for name in ("patch_embed.int8.onnx", "patch_embed.fp16.onnx", "fusion.fp16.onnx"):
        assert not (fresh_bundle / name).exists()
    for precision in ("int8", "fp16"):
        v = section["precisions"][precision]
        assert not v["shipped"]
        assert any("cosine_mean" in f and "< 1 (short by" in f for f in v["failures"]), v["failures"]
    assert section["variants"]["patch_embed"]["int8"]["verdict"].startswith("fail: patch_embed visual_tokens: cosine_")
    said = "\n".join(quiet.lines)
    assert "int8: NOT shipped: patch_embed visual_tokens: cosine_mean" in said
    with pytest.raises(BundleError, match="no int8 variant.*vlfront calibrate"):
        Runtime.load(fresh_bundle, backend="onnxruntime", precision="int8")
    with Runtime.load(fresh_bundle, backend="onnxruntime") as rt:  # still a good fp32 bundle
        assert rt.embed([[{"role": "user", "content": "hi"}]]).inputs_embeds.shape[0] == 1


def test_recalibration_replaces_variants_and_drops_their_engines(calibrated_bundle, tmp_path, quiet):
    root = tmp_path / "b"
    shutil.copytree(calibrated_bundle, root)
    manifest = _manifest(root)
    (root / "engines").mkdir()
    for stem in ("patch_embed.int8", "fusion"):
        (root / "engines" / f"{stem}.plan").write_bytes(b"plan")
    manifest["engines"] = {stem: {"file": f"engines/{stem}.plan", "onnx": f"{stem}.onnx"}
                           for stem in ("patch_embed.int8", "fusion")}
    write_manifest(root, manifest)
    section = calibrate_bundle(root, method="percentile", progress=quiet)
    bundle = Bundle.open(root)
    bundle.verify_all()
    assert section["method"] == "percentile" == bundle.manifest["calibration"]["method"]
    assert list(bundle.manifest["engines"]) == ["fusion"]  # built from fp32: still valid
    assert not (root / "engines/patch_embed.int8.plan").exists()
    assert any("dropping 1 TensorRT engine" in line for line in quiet.lines)


def test_a_failure_midway_leaves_a_valid_fp32_bundle(calibrated_bundle, tmp_path, monkeypatch, quiet):
    root = tmp_path / "b"
    shutil.copytree(calibrated_bundle, root)

    def boom(*args, **kwargs):
        raise RuntimeError("simulated crash in the gate")

    monkeypatch.setattr(calibrate_module.gate, "evaluate", boom)
    with pytest.raises(RuntimeError, match="simulated crash"):
        calibrate_bundle(root, progress=quiet)
    bundle = Bundle.open(root)
    bundle.verify_all()
    assert set(bundle.manifest["graphs"]["patch_embed"]) == {"fp32"}
    assert not (root / "patch_embed.int8.onnx").exists() and not (root / "fusion.fp16.onnx").exists()
    on_disk = sorted(p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file())
    assert on_disk == sorted([*bundle.manifest["files"], "manifest.json"])  # nothing left behind


def test_bad_options_and_data_leave_the_bundle_untouched(calibrated_bundle, tmp_path):
    root = tmp_path / "b"
    shutil.copytree(calibrated_bundle, root)
    before = _digests(root)
    with pytest.raises(CalibrationError, match="no such file or folder"):
        calibrate_bundle(root, data=tmp_path / "nope")
    with pytest.raises(CalibrationError, match="method='best'"):
        calibrate_bundle(root, method="best")
    with pytest.raises(CalibrationError, match="min_cosine=2"):
        calibrate_bundle(root, min_cosine=2)
    assert _digests(root) == before


def test_two_calibrations_are_byte_identical(calibrated_bundle, fresh_bundle, quiet):
    calibrate_bundle(fresh_bundle, progress=quiet)
    assert _digests(fresh_bundle) == _digests(calibrated_bundle)


def test_export_calibrates_by_default(tmp_path, ranks_path):
    from vlfront.export import export_bundle

    out = export_bundle(preset="tiny", out=tmp_path / "tiny", ranks=ranks_path, quiet=True)
    bundle = Bundle.open(out)
    bundle.verify_all()
    assert bundle.manifest["calibration"]["precisions"]["int8"]["shipped"]
    assert "int8" in bundle.manifest["graphs"]["patch_embed"]
