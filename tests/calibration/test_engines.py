"""TensorRT engines: metadata validation and refusals (pure, no TensorRT needed); GPU tests skip with a reason."""

import copy
import importlib.util

import pytest

from vlfront.calibration.engines import build_engines, profiles, served_files
from vlfront.config import preset
from vlfront.errors import EngineError, VlfrontError
from vlfront.runtime.backends.base import select_backend
from vlfront.runtime.backends.tensorrt import (TensorRTRunner, check_compatible, check_shape, engine_key,
                                               environment, find_engine, plan_path, validate_entry)
from vlfront.runtime.bundle import Bundle

SHA = "ab" * 32
ENV = {"tensorrt": "10.3.0", "gpu": "Tesla T4", "compute_capability": "7.5"}
PROFILE = profiles(preset("tiny"), 1, 8, 32)


def _entry(**changes):
    entry = {"file": "engines/patch_embed.int8.plan", "graph": "patch_embed", "precision": "int8",
             "onnx": "patch_embed.int8.onnx", "onnx_sha256": SHA, "tensorrt": "10.3.0", "gpu": "Tesla T4",
             "compute_capability": "7.5", "profile": PROFILE["patch_embed"], "strongly_typed": True}
    entry.update(changes)
    return entry


def _manifest(engines):
    return {"graphs": {"patch_embed": {"int8": {"file": "patch_embed.int8.onnx"}},
                       "fusion": {"int8": {"file": "fusion.onnx"}}},
            "engines": engines, "files": {"patch_embed.int8.onnx": {"sha256": SHA}}}


def trt_and_gpu_reason():
    try:
        environment()
        return None
    except EngineError as e:
        return str(e)


def test_names():
    assert engine_key("patch_embed.int8.onnx") == "patch_embed.int8"
    assert plan_path("fusion.onnx") == "engines/fusion.plan"


def test_a_well_formed_entry_validates():
    assert validate_entry("patch_embed.int8", _entry()) == _entry()


@pytest.mark.parametrize("change, message", [
    ({"tensorrt": None}, "field 'tensorrt' is missing"),
    ({"onnx_sha256": "xyz"}, "onnx_sha256 is not a sha256"),
    ({"graph": "vision"}, "unknown graph 'vision'"),
    ({"strongly_typed": "yes"}, "field 'strongly_typed'"),
    ({"profile": {"pixel_values": {"min": [8, 224, 224, 3], "opt": [1, 224, 224, 3], "max": [32, 224, 224, 3]}}},
     "min <= opt <= max"),
    ({"profile": {"pixel_values": {"min": [1, 224], "opt": [8, 224, 224, 3], "max": [32, 224, 224, 3]}}},
     "one rank"),
])
def test_malformed_entries_are_refused_with_the_fix(change, message):
    with pytest.raises(EngineError, match=message) as e:
        validate_entry("patch_embed.int8", _entry(**change), root="build/default")
    assert "vlfront engines --bundle build/default" in str(e.value)


def test_find_engine_follows_the_variant_file():
    manifest = _manifest({"patch_embed.int8": _entry()})
    assert find_engine(manifest, "patch_embed", "int8") == _entry()
    with pytest.raises(EngineError, match="no TensorRT engine for fusion.onnx; build it .*vlfront engines"):
        find_engine(manifest, "fusion", "int8")
    with pytest.raises(EngineError, match="no fp16 variant.*vlfront calibrate"):
        find_engine(manifest, "patch_embed", "fp16")
    stale = _manifest({"patch_embed.int8": _entry(onnx="patch_embed.onnx")})
    with pytest.raises(EngineError, match="was built from patch_embed.onnx"):
        find_engine(stale, "patch_embed", "int8")


def test_matching_engine_is_accepted():
    check_compatible(_entry(), ENV, SHA)


@pytest.mark.parametrize("env_change, sha, message", [
    ({"tensorrt": "10.7.0"}, SHA, r"built with TensorRT 10.3.0, this is TensorRT 10.7.0"),
    ({"gpu": "NVIDIA A10G", "compute_capability": "8.6"}, SHA, r"built for Tesla T4 \(compute capability 7.5\), "
                                                                r"this GPU is NVIDIA A10G \(8.6\)"),
    ({"gpu": "NVIDIA GeForce RTX 2080"}, SHA, "specific to the GPU model"),
    ({}, "cd" * 32, r"built from patch_embed.int8.onnx with sha256 abababab.*recalibrated or re-exported"),
])
def test_foreign_or_stale_engines_are_refused_with_the_rebuild_command(env_change, sha, message):
    with pytest.raises(EngineError, match=message) as e:
        check_compatible(_entry(), {**ENV, **env_change}, sha, root="build/default")
    assert "rebuild the engines on this machine with `vlfront engines --bundle build/default`" in str(e.value)


def test_inputs_outside_the_profile_are_refused():
    check_shape(_entry(), "pixel_values", (32, 224, 224, 3))
    with pytest.raises(VlfrontError, match=r"shape \[40, 224, 224, 3\].*allows \[1, 224, 224, 3\] to "
                                           r"\[32, 224, 224, 3\].*--max-batch"):
        check_shape(_entry(), "pixel_values", (40, 224, 224, 3))


def test_profiles_cover_text_only_batches_and_check_sizes():
    fusion = PROFILE["fusion"]
    assert fusion["visual_tokens"]["min"][0] == 0  # a text-only batch has no visual tokens
    assert fusion["visual_tokens"]["max"][0] == 32 * (1024 // 198)
    assert fusion["input_ids"] == {"min": [1, 1024], "opt": [8, 1024], "max": [32, 1024]}
    with pytest.raises(EngineError, match="need 1 <= min <= opt <= max"):
        profiles(preset("tiny"), 8, 4, 32)


def test_served_files_share_the_fp32_fusion(calibrated_bundle):
    files = served_files(Bundle.open(calibrated_bundle).manifest)
    assert files == {"fusion.onnx": ("fusion", "fp32"), "fusion.fp16.onnx": ("fusion", "fp16"),
                     "patch_embed.onnx": ("patch_embed", "fp32"), "patch_embed.int8.onnx": ("patch_embed", "int8"),
                     "patch_embed.fp16.onnx": ("patch_embed", "fp16")}


@pytest.mark.skipif(trt_and_gpu_reason() is None, reason="TensorRT and a GPU are present: the skip path is not taken")
def test_without_tensorrt_or_gpu_engines_skip_in_one_line_and_auto_uses_ort(calibrated_bundle, capsys):
    before = (calibrated_bundle / "manifest.json").read_bytes()
    assert build_engines(calibrated_bundle) is None
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("[engines] skipped: ")
    assert (calibrated_bundle / "manifest.json").read_bytes() == before
    bundle = Bundle.open(calibrated_bundle)
    assert TensorRTRunner.usable(bundle, "int8") is False
    assert select_backend(bundle, "auto", "int8").name == "onnxruntime"
    with pytest.raises(EngineError, match="TensorRT is not installed|no CUDA GPU|torch is not installed"):
        select_backend(bundle, "tensorrt", "int8").load()


def test_usable_never_raises_on_a_broken_manifest(calibrated_bundle):
    bundle = Bundle.open(calibrated_bundle)
    broken = copy.deepcopy(bundle)
    broken.manifest["engines"] = {"patch_embed.int8": "garbage"}
    broken.manifest["graphs"]["fusion"] = None
    assert TensorRTRunner.usable(broken, "int8") is False


GPU_REASON = trt_and_gpu_reason()


@pytest.mark.gpu
@pytest.mark.skipif(GPU_REASON is not None, reason=f"needs TensorRT and a CUDA GPU: {GPU_REASON}")
def test_engines_build_and_match_onnxruntime(calibrated_bundle, tmp_path):
    import shutil

    from vlfront.calibration.gpu_check import run_gpu_check

    root = tmp_path / "b"
    shutil.copytree(calibrated_bundle, root)
    result = run_gpu_check(root, out=tmp_path / "gpu.json", runs=5)
    assert result is not None and result["passed"], result["comparisons"]
    assert TensorRTRunner.usable(Bundle.open(root), "int8")
