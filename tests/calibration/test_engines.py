"""TensorRT engines: metadata validation and refusals (pure, no TensorRT needed); GPU tests skip with a reason."""

import copy
import importlib.util

import pytest

from vlfront.calibration.engines import build_engines, profiles, served_files
from vlfront.config import preset
from vlfront.errors import EngineError, VlfrontError
from vlfront.runtime.backends.base import select_backend
from vlfront.runtime.backends.tensorrt import (TensorRTRunner, check_compatible, check_shape, engine_key,
                                               environment, find_engine, plan_path, timing_cache_path,
                                               validate_entry)
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


def test_timing_cache_is_keyed_by_tensorrt_version_and_gpu():
    t4 = {"tensorrt": "10.13.3.9", "gpu": "Tesla T4", "compute_capability": "7.5"}
    assert timing_cache_path(t4) == "engines/timing-10.13.3.9-tesla-t4-sm75.cache"
    others = [{**t4, "tensorrt": "10.13.3.8"}, {**t4, "gpu": "NVIDIA A10G", "compute_capability": "8.6"},
              {**t4, "gpu": "../../etc/passwd"}]
    paths = [timing_cache_path(e) for e in others]
    assert len(set(paths + [timing_cache_path(t4)])) == 4
    assert all(p.startswith("engines/timing-") and p.count("/") == 1 for p in paths)


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
    check_shape(_entry(), "pixel_values", (160, 224, 224, 3))
    with pytest.raises(VlfrontError, match=r"shape \[161, 224, 224, 3\].*allows \[1, 224, 224, 3\] to "
                                           r"\[160, 224, 224, 3\].*--max-batch"):
        check_shape(_entry(), "pixel_values", (161, 224, 224, 3))


def test_profiles_take_a_whole_batch_of_max_batch_requests_and_text_only_batches():
    fusion = PROFILE["fusion"]
    assert fusion["visual_tokens"]["min"][0] == 0  # a text-only batch has no visual tokens
    per_request = 1024 // (196 + 2)  # the processor's most images in one request: 5
    assert per_request == 5
    assert fusion["visual_tokens"]["max"][0] == 32 * per_request
    assert PROFILE["patch_embed"]["pixel_values"] == {"min": [1, 224, 224, 3], "opt": [8, 224, 224, 3],
                                                      "max": [160, 224, 224, 3]}  # 8 requests x 5 images fit too
    assert fusion["input_ids"] == {"min": [1, 1024], "opt": [8, 1024], "max": [32, 1024]}
    with pytest.raises(EngineError, match="need 1 <= min <= opt <= max"):
        profiles(preset("tiny"), 8, 4, 32)


def test_served_files_share_the_fp32_fusion(calibrated_bundle):
    files = served_files(Bundle.open(calibrated_bundle).manifest)
    assert list(files)[:3] == ["patch_embed.onnx", "patch_embed.int8.onnx", "patch_embed.fp16.onnx"]  # fast first
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


# --- build_engines against a fake `tensorrt` module (the builder's logic, no TensorRT here) -------------------


class FakeTensorRT:
    """Just the tensorrt names build_engines uses; records what it is asked to do."""

    __version__ = "10.13.3.9"

    def __init__(self, refuse_parse=(), timing_cache_ok=True):
        self.parsed, self.shapes, self.loggers, self.cache_bytes = [], {}, 0, []
        self.refuse_parse, self.timing_cache_ok = set(refuse_parse), timing_cache_ok
        fake = self

        class Logger:
            WARNING = 2

            def __init__(self, level):
                fake.loggers += 1

        class Profile:
            def set_shape(self, name, lo, opt, hi):
                fake.shapes[name] = (list(lo), list(opt), list(hi))
                return True

        class Cache:
            def serialize(self):
                return b"timing cache of " + fake.__version__.encode()

        class Config:
            def set_memory_pool_limit(self, pool, size):
                pass

            def add_optimization_profile(self, profile):
                return 0

            def create_timing_cache(self, data):
                fake.cache_bytes.append(bytes(data))
                return Cache()

            def set_timing_cache(self, cache, ignore_mismatch):
                return fake.timing_cache_ok

        class Builder:
            def __init__(self, logger):
                pass

            def create_network(self, flags):
                return {"flags": flags}

            def create_builder_config(self):
                return Config()

            def create_optimization_profile(self):
                return Profile()

            def build_serialized_network(self, network, config):
                return b"plan of " + network["onnx"].encode()

        class OnnxParser:
            num_errors = 1

            def __init__(self, network, logger):
                self.network = network

            def parse_from_file(self, path):
                name = path.rsplit("/", 1)[-1]
                fake.parsed.append(name)
                self.network["onnx"] = name
                return name not in fake.refuse_parse

            def get_error(self, i):
                return "In node 3 (parseGraph): UNSUPPORTED_NODE"

        self.Logger, self.Builder, self.OnnxParser = Logger, Builder, OnnxParser
        self.NetworkDefinitionCreationFlag = type("Flags", (), {"STRONGLY_TYPED": 0})
        self.MemoryPoolType = type("Pools", (), {"WORKSPACE": 0})


T4 = {"tensorrt": "10.13.3.9", "gpu": "Tesla T4", "compute_capability": "7.5"}


@pytest.fixture
def fake_trt(monkeypatch):
    import sys

    from vlfront.calibration import engines
    from vlfront.runtime.backends import tensorrt as backend

    def install(**kw):
        fake = FakeTensorRT(**kw)
        monkeypatch.setitem(sys.modules, "tensorrt", fake)
        monkeypatch.setattr(engines, "environment", lambda: dict(T4))
        monkeypatch.setattr(backend, "_LOGGER", None)
        return fake

    return install


def test_engines_build_patch_embed_first_with_one_logger_and_a_keyed_timing_cache(calibrated_bundle, tmp_path,
                                                                                  fake_trt, quiet):
    import shutil

    root = shutil.copytree(calibrated_bundle, tmp_path / "b")
    fake = fake_trt()
    entries = build_engines(root, progress=quiet)
    assert fake.parsed == ["patch_embed.onnx", "patch_embed.int8.onnx", "patch_embed.fp16.onnx", "fusion.onnx",
                           "fusion.fp16.onnx"]
    assert fake.loggers == 1
    assert fake.shapes["pixel_values"] == ([1, 224, 224, 3], [8, 224, 224, 3], [160, 224, 224, 3])
    assert fake.shapes["visual_tokens"] == ([0, 196, 64], [8, 196, 64], [160, 196, 64])
    cache = "engines/timing-10.13.3.9-tesla-t4-sm75.cache"
    assert (root / cache).read_bytes() == b"timing cache of 10.13.3.9"
    assert {e["timing_cache"] for e in entries.values()} == {cache}
    bundle = Bundle.open(root)  # the manifest lists the plans with their sha256
    assert bundle.manifest["engines"] == entries
    assert bundle.path("engines/fusion.plan").read_bytes() == b"plan of fusion.onnx"
    assert find_engine(bundle.manifest, "patch_embed", "int8")["file"] == "engines/patch_embed.int8.plan"
    build_engines(root, progress=quiet)  # a rebuild reads the cache this TensorRT on this GPU wrote
    assert fake.cache_bytes[-1] == b"timing cache of 10.13.3.9"


def test_a_parser_refusal_stops_before_fusion_and_keeps_the_old_manifest(calibrated_bundle, tmp_path, fake_trt):
    import shutil

    root = shutil.copytree(calibrated_bundle, tmp_path / "b")
    before = (root / "manifest.json").read_bytes()
    fake = fake_trt(refuse_parse={"patch_embed.int8.onnx"})
    with pytest.raises(EngineError, match=r"patch_embed.int8.onnx: the TensorRT ONNX parser refused it: .*UNSUPPORTED"):
        build_engines(root, progress=None)
    assert fake.parsed == ["patch_embed.onnx", "patch_embed.int8.onnx"]
    assert (root / "manifest.json").read_bytes() == before
    assert not list((root / "engines").glob("*.plan*"))


def test_a_refused_timing_cache_is_an_error_not_ignored(calibrated_bundle, tmp_path, fake_trt):
    import shutil

    root = shutil.copytree(calibrated_bundle, tmp_path / "b")
    fake_trt(timing_cache_ok=False)
    with pytest.raises(EngineError, match="refused the timing cache engines/timing-10.13.3.9-tesla-t4-sm75.cache"):
        build_engines(root, progress=None)


def test_graphs_that_break_the_parser_rules_are_refused_before_tensorrt_is_asked(calibrated_bundle, tmp_path,
                                                                                 fake_trt):
    import hashlib
    import shutil

    import onnx

    from vlfront.calibration.manifest import write_listed

    root = shutil.copytree(calibrated_bundle, tmp_path / "b")
    path = root / "patch_embed.fp16.onnx"
    model = onnx.load(path)
    cast, reshape = model.graph.node[0], model.graph.node[1]
    assert cast.op_type == "Cast" and reshape.op_type == "Reshape" and reshape.input[0] == cast.output[0]
    reshape.input[0], reshaped = "pixel_values", reshape.output[0]  # Reshape on the uint8 input, as before the fix
    reshape.output[0], cast.input[0], cast.output[0] = "grid_u8", "grid_u8", reshaped
    nodes = list(model.graph.node)
    del model.graph.node[:]
    model.graph.node.extend([reshape, cast] + nodes[2:])
    del model.graph.value_info[:]
    path.write_bytes(model.SerializeToString())
    manifest = Bundle.open(root).manifest
    manifest["files"][path.name] = {"sha256": hashlib.sha256(path.read_bytes()).hexdigest(), "size": path.stat().st_size}
    write_listed(root, manifest)
    fake = fake_trt()
    with pytest.raises(EngineError, match=r"patch_embed.fp16.onnx: .*Reshape on UINT8 tensor 'pixel_values'"):
        build_engines(root, progress=None)
    assert fake.parsed == []


# --- gpu-check must fail where a GPU is visible but TensorRT is not -----------------------------------------


def test_gpu_visible_reads_nvidia_smi_or_device_nodes(tmp_path, monkeypatch):
    from vlfront.calibration import gpu_check

    smi = tmp_path / "nvidia-smi"
    smi.write_text("#!/bin/sh\necho 'GPU 0: Tesla T4 (UUID: GPU-1234)'\n")
    smi.chmod(0o755)
    monkeypatch.setenv("PATH", f"{tmp_path}")
    assert gpu_check.gpu_visible(devices=str(tmp_path / "none*")) == "GPU 0: Tesla T4 (UUID: GPU-1234)"
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    (tmp_path / "nvidia0").write_text("")
    assert gpu_check.gpu_visible(devices=str(tmp_path / "nvidia[0-9]*")) == f"device node {tmp_path / 'nvidia0'}"
    assert gpu_check.gpu_visible(devices=str(tmp_path / "absent[0-9]*")) is None


@pytest.mark.skipif(trt_and_gpu_reason() is None, reason="TensorRT and a GPU are present: nothing is missing here")
def test_gpu_check_fails_where_a_gpu_is_visible_but_tensorrt_is_missing(calibrated_bundle, monkeypatch, capsys):
    from vlfront.calibration import gpu_check

    gpu_check.require_tensorrt_where_a_gpu_is(None)  # no GPU: nothing to require, the check may skip
    with pytest.raises(EngineError, match=r"a GPU is visible \(GPU 0: Tesla T4\) but TensorRT cannot run: .*"
                                          r"make gpu-setup"):
        gpu_check.require_tensorrt_where_a_gpu_is("GPU 0: Tesla T4")
    monkeypatch.setattr(gpu_check, "gpu_visible", lambda: "GPU 0: Tesla T4")
    assert gpu_check.main(["--bundle", str(calibrated_bundle), "--out", ""]) == 2
    assert "gpu-check: error: a GPU is visible" in capsys.readouterr().err
    monkeypatch.setattr(gpu_check, "gpu_visible", lambda: None)
    assert gpu_check.main(["--bundle", str(calibrated_bundle), "--out", ""]) == 0  # skipped: no GPU
