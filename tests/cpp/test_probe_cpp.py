"""The C++ runtime runs the same acceptance probe as Python, with the same rule and the same message."""

import json
import re
import shutil

import pytest
from tampering import degrade_int8, resign
from vlfront_ctypes import CppError, Runtime

from vlfront.errors import BundleError
from vlfront.runtime import Runtime as PyRuntime


@pytest.fixture
def copy(calibrated_bundle, tmp_path):
    root = tmp_path / "b"
    shutil.copytree(calibrated_bundle, root)
    return root


def _shape(message):
    """The message with its measured figures blanked: the two runtimes' float rounding may differ."""
    return re.sub(r"-?\d+\.\d+(e[-+]\d+)?", "#", message)


@pytest.mark.parametrize("precision", ["int8", "fp16"])
def test_cpp_loads_a_calibrated_variant_after_its_probe(cpp_lib, calibrated_bundle, precision):
    with Runtime(cpp_lib, calibrated_bundle, backend="onnxruntime", precision=precision) as rt:
        assert rt.get_int("hidden_size") > 0


def test_cpp_refuses_a_degraded_int8_variant_with_pythons_message(cpp_lib, copy):
    degrade_int8(copy)
    with pytest.raises(CppError) as cpp:
        Runtime(cpp_lib, copy, backend="onnxruntime", precision="int8")
    assert cpp.value.code == "BUNDLE"
    with pytest.raises(BundleError) as py:
        PyRuntime.load(copy, backend="onnxruntime", precision="int8")
    message = cpp.value.message
    assert "fails its acceptance probe on this machine: patch_embed visual_tokens cosine_m" in message
    assert "Serve fp32 (precision='fp32'), or re-calibrate on this machine" in message
    assert _shape(message) == _shape(str(py.value))
    with Runtime(cpp_lib, copy, backend="onnxruntime", precision="fp16") as rt:  # the other variants serve
        assert rt.get_int("hidden_size") > 0


def test_cpp_verify_0_opts_out_with_a_warning(cpp_lib, copy, capfd):
    degrade_int8(copy)
    with Runtime(cpp_lib, copy, backend="onnxruntime", precision="int8", verify=0) as rt:
        assert rt.get_int("hidden_size") > 0
    assert "served without its acceptance probe (verify=False)" in capfd.readouterr().err
    with pytest.raises(CppError, match="option verify='yes': choose one of"):
        Runtime(cpp_lib, copy, verify="yes")


def test_cpp_refuses_a_missing_or_tampered_probe(cpp_lib, copy):
    data = bytearray((copy / "probe.safetensors").read_bytes())
    data[-1] ^= 0xFF
    (copy / "probe.safetensors").write_bytes(bytes(data))
    with pytest.raises(CppError, match="probe.safetensors sha256 .* tampered"):
        Runtime(cpp_lib, copy, backend="onnxruntime", precision="int8")
    (copy / "probe.safetensors").write_bytes(b"\xff" * 16)
    resign(copy, "probe.safetensors")
    with pytest.raises(CppError, match="probe.safetensors is not a valid safetensors file"):
        Runtime(cpp_lib, copy, backend="onnxruntime", precision="int8")
    manifest = json.loads((copy / "manifest.json").read_text())
    del manifest["calibration"]["probe"]
    (copy / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(CppError) as cpp:
        Runtime(cpp_lib, copy, backend="onnxruntime", precision="int8")
    with pytest.raises(BundleError) as py:
        PyRuntime.load(copy, backend="onnxruntime", precision="int8")
    assert cpp.value.message == str(py.value)
    assert "no acceptance probe" in cpp.value.message
