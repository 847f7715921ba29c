"""Fixtures for the calibration tests: bundle copies (the calibrated tiny bundle, `Quiet` and
`quiet` live in tests/conftest.py, shared with tests/cpp)."""

from __future__ import annotations

import shutil

import pytest


def copy_bundle(src, dest):
    shutil.copytree(src, dest)
    return dest


@pytest.fixture
def fresh_bundle(tiny_bundle, tmp_path):
    """A private copy of the fp32 tiny bundle, free to calibrate or break."""
    return copy_bundle(tiny_bundle, tmp_path / "bundle")
