"""The exported bundle: graphs, parity, manifest, reproducibility and refusals (tiny preset)."""

import json
import pathlib

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch

from vlfront.config import IMAGE_PAD_ID, preset
from vlfront.errors import ConfigError, ExportError, TokenizerError, WeightsError
from vlfront.export import export_bundle
from vlfront.export.parity import sample_input_ids, sample_photos
from vlfront.export.reference import FrontEnd, reference_fusion, reference_visual_tokens
from vlfront.runtime.bundle import Bundle

# Ops TensorRT 10's ONNX parser supports; no ScatterND-style data-dependent writes.
TRT_OPS = {"Transpose", "Cast", "Constant", "Div", "Sub", "Conv", "Shape", "Slice", "Concat", "Reshape", "Add",
           "Equal", "CumSum", "Gather", "Unsqueeze", "Where", "Clip", "Mul", "ConstantOfShape", "Expand",
           "Squeeze", "Flatten", "MatMul", "Min", "Max", "Range"}


def _session(bundle, graph):
    return ort.InferenceSession(str(bundle / f"{graph}.onnx"), providers=["CPUExecutionProvider"])


def _front(bundle):
    front = FrontEnd(preset("tiny"))
    return front.load(bundle / "weights.safetensors")


def test_graphs_pass_checker_with_opset_17_and_trt_ops(tiny_bundle):
    for graph in ("patch_embed", "fusion"):
        path = tiny_bundle / f"{graph}.onnx"
        onnx.checker.check_model(str(path), full_check=True)
        model = onnx.load(str(path), load_external_data=False)
        assert [o.version for o in model.opset_import if o.domain in ("", "ai.onnx")] == [17]
        ops = {n.op_type for n in model.graph.node}
        assert ops <= TRT_OPS, f"{graph} uses {ops - TRT_OPS}"
        assert "ScatterND" not in ops and "ScatterElements" not in ops


def test_graphs_keep_one_copy_of_the_weights(tiny_bundle):
    manifest = json.loads((tiny_bundle / "manifest.json").read_text())
    for graph in ("patch_embed", "fusion"):
        model = onnx.load(str(tiny_bundle / f"{graph}.onnx"), load_external_data=False)
        for init in model.graph.initializer:
            info = {e.key: e.value for e in init.external_data}
            assert init.data_location == onnx.TensorProto.EXTERNAL and info["location"] == "weights.safetensors"
    # The ONNX files are tiny next to the weights they point into.
    assert manifest["files"]["fusion.onnx"]["size"] < 100_000


@pytest.mark.parametrize("n", [1, 2, 5])
def test_patch_embed_parity_on_real_photos_with_dynamic_n(tiny_bundle, n):
    px = sample_photos(preset("tiny"))
    px = np.concatenate([px, px[::-1]])[:n]
    got = _session(tiny_bundle, "patch_embed").run(None, {"pixel_values": px})[0]
    ref = reference_visual_tokens(_front(tiny_bundle), torch.from_numpy(px)).numpy()
    assert got.shape == (n, 196, 64)
    assert np.abs(got - ref).max() / np.abs(ref).max() < 1e-4


@pytest.mark.parametrize("layout", [[0], [0, 0, 0], [1], [0, 1, 3], [3, 1, 0, 2]])
def test_fusion_parity_with_dynamic_b_and_text_only(tiny_bundle, layout):
    cfg = preset("tiny")
    ids = sample_input_ids(cfg, layout, seed=len(layout))
    rng = np.random.default_rng(0)
    vis = rng.standard_normal((sum(layout), 196, 64)).astype(np.float32)
    got = _session(tiny_bundle, "fusion").run(None, {"input_ids": ids, "visual_tokens": vis})[0]
    ref = reference_fusion(_front(tiny_bundle), torch.from_numpy(ids), torch.from_numpy(vis)).numpy()
    np.testing.assert_allclose(got, ref, rtol=1e-6, atol=1e-6)
    assert (ids == IMAGE_PAD_ID).sum() == 196 * sum(layout)


def test_manifest_holds_what_spec_3_requires(tiny_bundle):
    m = json.loads((tiny_bundle / "manifest.json").read_text())
    assert m["schema_version"] == 1 and m["config"]["hidden_size"] == 64 and m["config"]["tokens_per_image"] == 196
    assert m["special_tokens"]["<|image_pad|>"] == 151655 and len(m["special_tokens"]) == 26
    assert m["preprocessing"]["resample"] == "bicubic" and m["preprocessing"]["resize"] == [224, 224]
    assert set(m["files"]) >= {"weights.safetensors", "tokenizer.json", "patch_embed.onnx", "fusion.onnx"}
    fusion = m["graphs"]["fusion"]["fp32"]
    assert [t["name"] for t in fusion["inputs"]] == ["input_ids", "visual_tokens"]
    assert fusion["outputs"][0] == {"name": "inputs_embeds", "dtype": "float32", "shape": ["B", 1024, 64]}
    for outs in m["parity"].values():
        for fig in outs.values():
            assert fig["max_rel"] < 1e-4 and fig["cosine_min"] > 0.99999
    assert {"torch", "onnx", "onnxruntime", "numpy", "python", "vlfront"} <= set(m["tools"])
    Bundle.open(tiny_bundle).verify_all()


def test_two_exports_are_byte_identical_and_second_run_skips(tmp_path, ranks_path, tiny_bundle, capsys):
    a = export_bundle("tiny", tmp_path / "a", ranks=ranks_path, calibrate=False, quiet=True)
    files = sorted(p.relative_to(a) for p in a.rglob("*") if p.is_file())
    assert files == sorted(p.relative_to(tiny_bundle) for p in tiny_bundle.rglob("*") if p.is_file())
    for rel in files:
        assert (a / rel).read_bytes() == (tiny_bundle / rel).read_bytes(), rel
    mtime = (a / "weights.safetensors").stat().st_mtime_ns
    export_bundle("tiny", a, ranks=ranks_path, calibrate=False)
    assert "not rebuilding" in capsys.readouterr().err
    assert (a / "weights.safetensors").stat().st_mtime_ns == mtime


def test_a_tampered_bundle_is_rebuilt(tmp_path, ranks_path):
    out = export_bundle("tiny", tmp_path / "b", ranks=ranks_path, calibrate=False, quiet=True)
    good = (out / "fusion.onnx").read_bytes()
    (out / "fusion.onnx").write_bytes(good[:-1] + bytes([good[-1] ^ 1]))
    export_bundle("tiny", out, ranks=ranks_path, calibrate=False, quiet=True)
    assert (out / "fusion.onnx").read_bytes() == good


def test_user_weights_are_exported(tmp_path, ranks_path):
    w = tmp_path / "mine.safetensors"
    FrontEnd(preset("tiny")).init_weights(99).save(w)
    out = export_bundle("tiny", tmp_path / "mine", weights=w, ranks=ranks_path, calibrate=False, quiet=True)
    assert (out / "weights.safetensors").read_bytes() == w.read_bytes()
    m = json.loads((out / "manifest.json").read_text())
    assert m["weights"]["source"].startswith("sha256:")


def test_unknown_preset(tmp_path, ranks_path):
    with pytest.raises(ConfigError, match="unknown preset 'huge'.*default.*tiny"):
        export_bundle("huge", tmp_path / "x", ranks=ranks_path, quiet=True)


def test_unwritable_output_dir(tmp_path, ranks_path):
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    with pytest.raises(ExportError, match="cannot write the bundle"):
        export_bundle("tiny", blocker / "bundle", ranks=ranks_path, calibrate=False, quiet=True)


def test_wrong_weight_shapes_leave_existing_bundle_alone(tmp_path, ranks_path):
    out = export_bundle("tiny", tmp_path / "keep", ranks=ranks_path, calibrate=False, quiet=True)
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    w = tmp_path / "default.safetensors"
    FrontEnd(preset("tiny")).init_weights(0).save(w)
    with pytest.raises(WeightsError, match="patch_embed.weight"):
        export_bundle("default", out, weights=w, ranks=ranks_path, calibrate=False, quiet=True)
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before
    assert not (tmp_path / "keep.partial").exists()


@pytest.mark.parametrize("damage", ["truncated", "special_id", "not_json"])
def test_corrupted_tokenizer_file(tmp_path, ranks_path, tokenizer_json, damage):
    text = pathlib.Path(tokenizer_json).read_text(encoding="utf-8")
    bad = tmp_path / "tokenizer.json"
    if damage == "truncated":
        bad.write_text(text[: len(text) // 2], encoding="utf-8")
    elif damage == "special_id":
        bad.write_text(text.replace('"id":151655', '"id":151600', 1), encoding="utf-8")
    else:
        bad.write_bytes(b"\x00\xff garbage")
    with pytest.raises(TokenizerError):
        export_bundle("tiny", tmp_path / "t", tokenizer=bad, ranks=ranks_path, calibrate=False, quiet=True)
    assert not (tmp_path / "t").exists()
