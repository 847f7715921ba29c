"""Fixtures for tests that drive the C++ build (runtime/cpp) from Python.

They skip, saying why, when the build is missing: `make test` builds it first
(`make cpp`), so a skip there means the C++ build failed and `make cpp-test`
at the end of `make test` reports the error.
"""

from __future__ import annotations

import os
import pathlib

import pytest

REPO = pathlib.Path(__file__).resolve().parents[2]
BUILD = pathlib.Path(os.environ.get("VLFRONT_CPP_BUILD", REPO / "build" / "cpp"))


def _built(rel: str) -> pathlib.Path:
    path = BUILD / rel
    if not path.exists():
        pytest.skip(f"C++ build missing: {path} (run `make cpp`)")
    return path


@pytest.fixture(scope="session")
def cpp_tokenize_bin() -> pathlib.Path:
    return _built("tools/vlfront-tokenize")


@pytest.fixture(scope="session")
def cpp_lib():
    from vlfront_ctypes import Lib

    return Lib(_built("libvlfront.so"))


@pytest.fixture(scope="session")
def cpp_http_server_bin() -> pathlib.Path:
    return _built("examples/vlfront-http-server")


@pytest.fixture(scope="module")
def runtimes(cpp_lib, tiny_bundle):
    """The Python and the C++ runtime on the tiny bundle, for parity tests: (py, cpp) (a module may override it)."""
    from vlfront_ctypes import Runtime as CppRuntime

    from vlfront.runtime import Runtime as PyRuntime

    py = PyRuntime.load(tiny_bundle)
    cpp = CppRuntime(cpp_lib, tiny_bundle)
    yield py, cpp
    cpp.close()
    py.close()
