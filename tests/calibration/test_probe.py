"""The load-time acceptance probe (vlfront.runtime.probe) in the Python runtime.

Every accuracy assertion derives from the bundle's own gate (manifest
`calibration.thresholds`), never from figures one CPU gave.
"""

import json
import logging
import shutil

import numpy as np
import pytest

from vlfront.errors import BundleError
from vlfront.runtime import Runtime, probe
from vlfront.runtime.bundle import Bundle

from tampering import degrade_int8, resign

REFUSAL = (r"the int8 variant fails its acceptance probe on this machine: patch_embed visual_tokens cosine_m\w+ "
           r"[0-9.]+ < gate [0-9.]+.*rel_l2 .*backend onnxruntime on CPU '.+' \(.+\); the gate was measured on "
           r"CPU '.+' \(.+\)\. Serve fp32 \(precision='fp32'\), or re-calibrate on this machine "
           r"\(`vlfront calibrate --bundle .+`\); verify=False \(C option verify=0\) skips this check")


@pytest.fixture
def copy(calibrated_bundle, tmp_path):
    root = tmp_path / "b"
    shutil.copytree(calibrated_bundle, root)
    return root


def test_probe_travels_with_the_bundle(calibrated_bundle):
    bundle = Bundle.open(calibrated_bundle)
    section = bundle.manifest["calibration"]
    spec = section["probe"]
    assert spec["file"] == probe.FILE and probe.FILE in bundle.manifest["files"]
    bundle.path(probe.FILE)  # listed, sized and hashed like every other file
    c = bundle.config
    n = len(spec["images"])
    assert 1 <= n <= probe.MAX_IMAGES and set(spec["images"]) <= set(section["data"]["held_out"])
    assert spec["tensors"]["patch_embed.pixel_values"] == {"dtype": "uint8", "shape": [n, c.image_size, c.image_size, 3]}
    assert spec["tensors"]["patch_embed.visual_tokens"] == {"dtype": "float32",
                                                            "shape": [n, c.tokens_per_image, c.hidden_size]}
    th = section["thresholds"]
    for precision in ("int8", "fp16"):
        for fig in spec["figures"][precision].values():
            assert fig["finite"] and fig["cosine_mean"] >= th["mean_cosine"] and fig["cosine_min"] >= th["min_cosine"]
    machine = section["machine"]
    assert machine["cpu"] and isinstance(machine["features"], list)
    assert set(machine["features"]) <= set(probe.CPU_FEATURES)


@pytest.mark.parametrize("precision", ["int8", "fp16"])
def test_load_runs_the_probe_and_passes_the_gate(calibrated_bundle, precision):
    with Runtime.load(calibrated_bundle, backend="onnxruntime", precision=precision) as rt:
        figs = probe.verify(rt.bundle, rt.runner, precision)
        th = rt.bundle.manifest["calibration"]["thresholds"]
        # int8 serves the fp32 fusion graph, so only patch_embed has anything to check
        assert set(figs) == {"patch_embed/visual_tokens"} | ({"fusion/inputs_embeds"} if precision == "fp16" else set())
        for fig in figs.values():
            assert not probe.failures(fig, th)
            assert fig["cosine_mean"] >= th["mean_cosine"] and fig["cosine_min"] >= th["min_cosine"]


def test_a_degraded_int8_variant_is_refused_at_load(copy):
    degrade_int8(copy)
    Bundle.open(copy).verify_all()  # the hashes pass: only the probe can tell
    with pytest.raises(BundleError, match=REFUSAL):
        Runtime.load(copy, backend="onnxruntime", precision="int8")
    with Runtime.load(copy, backend="onnxruntime", precision="fp16") as rt:  # the other variants still serve
        assert rt.runner.precision == "fp16"


def test_verify_false_opts_out_and_logs_it(copy, caplog):
    degrade_int8(copy)
    with caplog.at_level(logging.WARNING, logger="vlfront.probe"):
        with Runtime.load(copy, backend="onnxruntime", precision="int8", verify=False) as rt:
            assert rt.runner.precision == "int8"
    assert any("served without its acceptance probe (verify=False)" in r.getMessage() for r in caplog.records)


def test_a_tampered_or_missing_probe_is_refused(copy):
    path = copy / probe.FILE
    data = bytearray(path.read_bytes())
    data[-1] ^= 0xFF
    path.write_bytes(bytes(data))
    with pytest.raises(BundleError, match=f"{probe.FILE} sha256 .* tampered"):
        Runtime.load(copy, backend="onnxruntime", precision="int8")
    path.write_bytes(b"\x08\x00\x00\x00\x00\x00\x00\x00{}garbage")
    resign(copy, probe.FILE)
    with pytest.raises(BundleError, match=f"{probe.FILE}.*(not a valid safetensors|tensor .* is missing)"):
        Runtime.load(copy, backend="onnxruntime", precision="int8")
    manifest = json.loads((copy / "manifest.json").read_text())
    del manifest["calibration"]["probe"]
    (copy / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(BundleError, match="no acceptance probe.*vlfront calibrate --bundle.*verify=False"):
        Runtime.load(copy, backend="onnxruntime", precision="int8")
    with Runtime.load(copy, backend="onnxruntime") as rt:  # fp32 needs no probe
        assert rt.runner.precision == "fp32"


@pytest.mark.parametrize("value", ["0.99", None, 1.5, 2, True])
def test_a_malformed_gate_is_a_bundle_error(copy, value):
    manifest = json.loads((copy / "manifest.json").read_text())
    manifest["calibration"]["thresholds"]["min_cosine"] = value
    (copy / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(BundleError, match="calibration.thresholds.min_cosine is .*not a cosine in"):
        Runtime.load(copy, backend="onnxruntime", precision="int8")


def test_the_probe_checks_shapes_against_the_config(copy):
    from safetensors.numpy import load_file, save_file

    t = load_file(str(copy / probe.FILE))
    t["patch_embed.visual_tokens"] = t["patch_embed.visual_tokens"][:, :5]
    save_file(t, str(copy / probe.FILE))
    resign(copy, probe.FILE)
    with pytest.raises(BundleError, match="tensor patch_embed.visual_tokens is float32 .* expected float32"):
        Runtime.load(copy, backend="onnxruntime", precision="int8")


def test_figures_follow_the_gate_rule():
    e = np.ones((2, 3, 4))
    assert probe.figures(e, e)["cosine_min"] == 1.0
    bad = e.copy()
    bad[0, 0] = -1
    fig = probe.figures(bad, e)
    assert fig["cosine_min"] == pytest.approx(-1.0) and fig["tokens"] == 6
    assert probe.failures(fig, {"mean_cosine": 0.999, "min_cosine": 0.99}) == [
        "cosine_min -1.000000 < gate 0.99", f"cosine_mean {fig['cosine_mean']:.6f} < gate 0.999"]
    nan = e.copy()
    nan[1, 1, 1] = np.nan
    assert probe.failures(probe.figures(nan, e), {"mean_cosine": -1, "min_cosine": -1}) == ["NaN/Inf in the output"]


def _ort_as_engines(bundle, precision):
    """A stand-in for the TensorRT runner (no GPU here): the probe code path is the same."""
    from vlfront.runtime.backends.onnxruntime import OnnxRuntimeRunner

    return OnnxRuntimeRunner(bundle, precision).load()


def test_engines_are_probed_with_the_same_function(calibrated_bundle, copy, fresh_bundle):
    said = []
    figs = probe.verify_engines(calibrated_bundle, _ort_as_engines, said.append)
    assert set(figs) == {"fp32", "int8", "fp16"} and len(said) == 3
    assert set(figs["fp32"]) == set(figs["fp16"]) == {"patch_embed/visual_tokens", "fusion/inputs_embeds"}
    th = Bundle.open(calibrated_bundle).manifest["calibration"]["thresholds"]
    assert all(not probe.failures(f, th) for per in figs.values() for f in per.values())
    degrade_int8(copy)
    with pytest.raises(BundleError, match="the int8 variant fails its acceptance probe"):
        probe.verify_engines(copy, _ort_as_engines, said.append)
    assert probe.verify_engines(fresh_bundle, _ort_as_engines, said.append) == {}
    assert "no acceptance probe (not calibrated)" in said[-1]
