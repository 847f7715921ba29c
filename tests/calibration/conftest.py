"""Fixtures for the calibration tests: a calibrated tiny bundle, built once, and bundle copies."""

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


@pytest.fixture(scope="session")
def calibrated_bundle(tiny_bundle, tmp_path_factory):
    """The tiny bundle calibrated with the defaults (minmax, default photos). Read-only for tests."""
    from vlfront.calibration import calibrate_bundle

    root = copy_bundle(tiny_bundle, tmp_path_factory.mktemp("calibrated") / "tiny")
    calibrate_bundle(root, progress=Quiet())
    return root


class Quiet:
    """A progress object that records what it is told instead of printing it."""

    def __init__(self):
        self.lines = []

    def say(self, text):
        self.lines.append(text)

    def step(self, name):
        import contextlib

        self.lines.append(name)
        return contextlib.nullcontext()


@pytest.fixture
def quiet():
    return Quiet()
