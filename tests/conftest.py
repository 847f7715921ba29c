"""Shared fixtures: the Qwen ranks, the tokenizer asset and a tiny bundle, built once per session."""

from __future__ import annotations

import os
import pathlib

import pytest

REPO = pathlib.Path(__file__).resolve().parents[1]
CACHE = pathlib.Path(os.environ.get("VLFRONT_CACHE", REPO / "build" / "cache"))


@pytest.fixture(scope="session")
def ranks_path() -> pathlib.Path:
    """The Qwen ranks file (fetched from the dashscope wheel by `make setup`)."""
    from vlfront.export import tokenizer_asset

    path = CACHE / "qwen.tiktoken"
    if not path.exists():
        tokenizer_asset.fetch_ranks(path)
    return path


@pytest.fixture(scope="session")
def tokenizer_json(ranks_path) -> pathlib.Path:
    """tokenizer.json built from the ranks (cached beside them)."""
    from vlfront.export import tokenizer_asset

    path = CACHE / "tokenizer.json"
    if not path.exists():
        tokenizer_asset.write_tokenizer_json(tokenizer_asset.load_ranks(ranks_path), path)
    return path


@pytest.fixture(scope="session")
def qwen_tokenizer(tokenizer_json):
    """The runtime's host-side tokenizer over the Qwen vocabulary."""
    from vlfront.runtime.tokenizer import Tokenizer

    return Tokenizer.from_file(tokenizer_json)


@pytest.fixture(scope="session")
def tiny_bundle(tmp_path_factory, ranks_path) -> pathlib.Path:
    """A tiny-preset bundle exported once per session (fp32 only: calibration tests make their own)."""
    from vlfront.export import export_bundle

    out = tmp_path_factory.mktemp("bundles") / "tiny"
    export_bundle(preset="tiny", out=out, ranks=ranks_path, calibrate=False, quiet=True)
    return out


@pytest.fixture(scope="session")
def calibrated_bundle(tiny_bundle, tmp_path_factory):
    """The tiny bundle calibrated with the defaults (minmax, default photos). Read-only for tests."""
    import shutil

    from vlfront.calibration import calibrate_bundle

    root = tmp_path_factory.mktemp("calibrated") / "tiny"
    shutil.copytree(tiny_bundle, root)
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
