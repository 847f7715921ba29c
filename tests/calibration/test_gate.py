"""Gate figures and verdict messages (pure), on known perturbations."""

import numpy as np
import pytest

from vlfront.calibration.gate import Thresholds, failures, figures, verdicts
from vlfront.errors import CalibrationError


def test_identical_outputs_are_perfect():
    x = np.random.default_rng(0).normal(size=(2, 5, 8)).astype(np.float32)
    f = figures(x, x)
    assert f["cosine_min"] == pytest.approx(1.0) and f["cosine_mean"] == pytest.approx(1.0)
    assert f["rel_l2"] == 0.0 and f["max_abs"] == 0.0 and f["finite"] and f["tokens"] == 10


def test_figures_match_hand_computed_values():
    e = np.array([[1.0, 0.0], [0.0, 2.0]])
    a = np.array([[1.0, 1.0], [0.0, 2.0]])
    f = figures(a, e)
    assert f["cosine_min"] == pytest.approx(1 / np.sqrt(2))
    assert f["cosine_mean"] == pytest.approx((1 / np.sqrt(2) + 1) / 2)
    assert f["rel_l2"] == pytest.approx(1 / np.sqrt(5))
    assert f["max_abs"] == 1.0


def test_zero_vectors_and_nan():
    e = np.zeros((2, 3))
    assert figures(np.zeros((2, 3)), e)["cosine_min"] == 1.0
    assert figures(np.ones((2, 3)), e)["cosine_min"] == 0.0
    a = np.ones((2, 3))
    a[0, 0] = np.nan
    f = figures(a, np.ones((2, 3)))
    assert not f["finite"]
    assert failures(f, Thresholds())[0] == "NaN/Inf in the output"


def test_failures_say_which_figure_and_by_how_much():
    fig = {"cosine_min": 0.985, "cosine_mean": 0.9985, "finite": True}
    out = failures(fig, Thresholds(0.999, 0.99))
    assert out == ["cosine_mean 0.998500 < 0.999 (short by 0.000500)", "cosine_min 0.985000 < 0.99 (short by 0.005000)"]
    assert failures({"cosine_min": 0.999, "cosine_mean": 0.9995, "finite": True}, Thresholds()) == []
    # the AVX2-only saturation of 8-bit weights (cosine min 0.997, mean 0.99974) fails the default gate
    assert failures({"cosine_min": 0.997, "cosine_mean": 0.99974, "finite": True}, Thresholds()) == [
        "cosine_min 0.997000 < 0.999 (short by 0.002000)"]


def test_verdicts_group_failures_by_precision():
    rows = [{"precision": "int8", "scope": "patch_embed", "output": "visual_tokens", "verdict": "fail",
             "failures": "cosine_min 0.9 < 0.99 (short by 0.09)"},
            {"precision": "fp16", "scope": "fusion", "output": "inputs_embeds", "verdict": "pass", "failures": ""}]
    assert verdicts(rows) == {"int8": ["patch_embed visual_tokens: cosine_min 0.9 < 0.99 (short by 0.09)"], "fp16": []}


def test_thresholds_are_checked():
    with pytest.raises(CalibrationError, match="mean_cosine=1.5"):
        Thresholds(1.5, 0.99).validate()
    with pytest.raises(CalibrationError, match="min_cosine=nan"):
        Thresholds(0.999, float("nan")).validate()


def test_shape_mismatch_is_refused():
    with pytest.raises(CalibrationError, match="differs from the fp32 shape"):
        figures(np.zeros((2, 3)), np.zeros((3, 3)))
