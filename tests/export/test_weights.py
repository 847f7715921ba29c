"""weights.safetensors: SPEC names and shapes, and refusals that name the tensor."""

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

from vlfront.config import preset
from vlfront.errors import WeightsError
from vlfront.export.reference import FrontEnd
from vlfront.weights import check_weights, expected_tensors, load_numpy

CFG = preset("tiny")


@pytest.fixture
def good(tmp_path):
    path = tmp_path / "weights.safetensors"
    FrontEnd(CFG).init_weights(0).save(path)
    return path


def test_round_trip_keeps_values(good):
    front = FrontEnd(CFG).load(good)
    ref = FrontEnd(CFG).init_weights(0)
    for name, t in front.state_tensors().items():
        assert torch.equal(t, ref.state_tensors()[name]), name
    arrays = load_numpy(good, CFG)
    assert set(arrays) == set(expected_tensors(CFG))
    np.testing.assert_array_equal(arrays["modality_embed.weight"], ref.modality_embed.weight.numpy())


def _tensors():
    return FrontEnd(CFG).init_weights(0).state_tensors()


def test_missing_tensor_is_named(tmp_path):
    t = _tensors()
    del t["position_embed.weight"]
    save_file(t, tmp_path / "w.safetensors")
    with pytest.raises(WeightsError, match="missing tensor.*position_embed.weight"):
        FrontEnd(CFG).load(tmp_path / "w.safetensors")


def test_extra_tensor_is_named(tmp_path):
    t = _tensors()
    t["lm_head.weight"] = torch.zeros(2, 2)
    save_file(t, tmp_path / "w.safetensors")
    with pytest.raises(WeightsError, match="unexpected tensor.*lm_head.weight"):
        check_weights(tmp_path / "w.safetensors", CFG)


def test_misshapen_tensor_is_named_with_both_shapes(tmp_path):
    t = _tensors()
    t["patch_embed.weight"] = torch.zeros(64, 3, 14, 14)
    save_file(t, tmp_path / "w.safetensors")
    with pytest.raises(WeightsError, match=r"patch_embed.weight.*\[64, 3, 14, 14\].*\[64, 3, 16, 16\]"):
        check_weights(tmp_path / "w.safetensors", CFG)


def test_wrong_dtype_is_refused(tmp_path):
    t = _tensors()
    t["modality_embed.weight"] = t["modality_embed.weight"].half()
    save_file(t, tmp_path / "w.safetensors")
    with pytest.raises(WeightsError, match="modality_embed.weight.*F16"):
        check_weights(tmp_path / "w.safetensors", CFG)


def test_default_weights_do_not_fit_tiny(good):
    with pytest.raises(WeightsError, match=r"patch_embed.weight.*F32\[64, 3, 16, 16\], expected F32\[768, 3, 16, 16\]"):
        check_weights(good, preset("default"))


@pytest.mark.parametrize("damage", ["truncate", "huge_header", "garbage_header", "empty", "trailing"])
def test_damaged_files_are_refused(good, damage):
    data = good.read_bytes()
    if damage == "truncate":
        data = data[: len(data) // 2]
    elif damage == "huge_header":
        data = (2**62).to_bytes(8, "little") + data[8:]
    elif damage == "garbage_header":
        data = data[:8] + b"\xff" * 16 + data[24:]
    elif damage == "empty":
        data = b""
    else:
        data = data + b"\0" * 4
    good.write_bytes(data)
    with pytest.raises(WeightsError):
        check_weights(good, CFG)
