"""`write_repository` and `vlfront triton`: configs parse as Triton ModelConfig, the ensemble form is wired."""

from __future__ import annotations

import pytest

from vlfront.cli import main
from vlfront.runtime.triton import RepositoryOptions, TritonRepositoryError, validate_repository, write_repository

pb = pytest.importorskip("tritonclient.grpc.model_config_pb2", reason="tritonclient comes with `make setup`")


def test_cli_writes_a_single_model_repository(tiny_bundle, tmp_path):
    out = tmp_path / "repo"
    assert main(["triton", "--bundle", str(tiny_bundle), "--out", str(out), "--instances", "3", "--max-batch", "16",
                 "--cache", "redis://10.0.0.5:6379/2", "--output-dtype", "float16", "--decode", "fastest"]) == 0
    models = validate_repository(out)
    assert list(models) == ["vlfront"]
    m = models["vlfront"]
    assert m.backend == "python" and m.max_batch_size == 16
    assert m.instance_group[0].kind == m.instance_group[0].KIND_CPU and m.instance_group[0].count == 3
    assert m.HasField("dynamic_batching")
    assert [i.name for i in m.input] == ["request", "images"]
    assert m.input[0].data_type == pb.TYPE_STRING and list(m.input[0].dims) == [1] and not m.input[0].optional
    assert m.input[1].data_type == pb.TYPE_STRING and list(m.input[1].dims) == [-1] and m.input[1].optional
    outs = {o.name: (o.data_type, list(o.dims)) for o in m.output}
    assert outs["inputs_embeds"] == (pb.TYPE_FP16, [1024, 64])
    assert outs["dropped_tokens"][1] == [1] and outs["input_ids"][1] == [1024]
    params = {k: v.string_value for k, v in m.parameters.items()}
    assert params["bundle"] == str(tiny_bundle.resolve()) and params["cache"] == "redis://10.0.0.5:6379/2"
    assert params["decode"] == "fastest"
    assert (out / "vlfront" / "1" / "model.py").exists()


def test_ensemble_configs_validate_against_triton_model_config(tiny_bundle, tmp_path):
    """UNVERIFIED on a GPU: only the configs are checked here (no GPU, no ORT/TRT backend in the wheel)."""
    out = write_repository(tiny_bundle, tmp_path / "repo", RepositoryOptions(layout="ensemble"))
    models = validate_repository(out)
    assert set(models) == {"vlfront", "vlfront_preprocess", "vlfront_patch_embed", "vlfront_fusion",
                           "vlfront_ensemble"}
    ens = models["vlfront_ensemble"]
    assert ens.platform == "ensemble"
    steps = [s.model_name for s in ens.ensemble_scheduling.step]
    assert steps == ["vlfront_preprocess", "vlfront_patch_embed", "vlfront_fusion"]
    # Every tensor a step reads is an ensemble input or written by an earlier step, with matching types.
    produced = {i.name: i.data_type for i in ens.input}
    for step in ens.ensemble_scheduling.step:
        m = models[step.model_name]
        types_in = {i.name: i.data_type for i in m.input}
        for key, tensor in step.input_map.items():
            assert produced[tensor] == types_in[key], (step.model_name, key)
        for key, tensor in step.output_map.items():
            produced[tensor] = {o.name: o.data_type for o in m.output}[key]
    assert {o.name for o in ens.output} <= set(produced)
    for gpu in ("vlfront_patch_embed", "vlfront_fusion"):
        m = models[gpu]
        assert m.backend == "onnxruntime" and m.instance_group[0].kind == m.instance_group[0].KIND_GPU
        assert (out / gpu / "1" / m.default_model_filename).exists()
        assert (out / gpu / "1" / "weights.safetensors").exists()  # the external data the graph points into
    trt = validate_repository(write_repository(tiny_bundle, tmp_path / "trt",
                                               RepositoryOptions(layout="ensemble", gpu_backend="tensorrt")))
    assert trt["vlfront_fusion"].backend == "tensorrt" and trt["vlfront_fusion"].default_model_filename == "model.plan"


def test_bad_options_and_existing_output_are_refused(tiny_bundle, tmp_path):
    for opts in (RepositoryOptions(instances=0), RepositoryOptions(precision="bf16"),
                 RepositoryOptions(cache="memcached://x"), RepositoryOptions(layout="tree"),
                 RepositoryOptions(decode="draft")):
        with pytest.raises(TritonRepositoryError):
            write_repository(tiny_bundle, tmp_path / "r", opts)
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "x").write_text("mine")
    with pytest.raises(TritonRepositoryError, match="--force"):
        write_repository(tiny_bundle, tmp_path / "full")
    assert main(["triton", "--bundle", str(tiny_bundle), "--out", str(tmp_path / "full")]) == 2
    assert main(["triton", "--bundle", str(tiny_bundle), "--out", str(tmp_path / "i8"), "--precision", "int8"]) == 2
