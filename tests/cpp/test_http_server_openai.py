"""The C++ HTTP server with OpenAI bodies (examples/openai_client.py): same values and refusals as Python.

The C++ server has no fetcher: remote image URLs are refused, as by the Python server without one.
"""

from __future__ import annotations

import importlib.util
import json
import pathlib
import subprocess

import numpy as np
import pytest
import skimage

from vlfront.errors import RequestError
from vlfront.runtime import Runtime as PyRuntime

REPO = pathlib.Path(__file__).resolve().parents[2]
ROCKET = (pathlib.Path(skimage.__file__).parent / "data" / "rocket.jpg").read_bytes()

_spec = importlib.util.spec_from_file_location("vlfront_example_openai_client_cpp", REPO / "examples" / "openai_client.py")
client = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(client)


@pytest.fixture(scope="module")
def server(cpp_http_server_bin, tiny_bundle):
    proc = subprocess.Popen([str(cpp_http_server_bin), "--bundle", str(tiny_bundle), "--port", "0", "--threads", "1"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    line = proc.stdout.readline()
    if not line.startswith("listening on "):
        proc.kill()
        pytest.fail(f"server did not start: {line!r} {proc.stderr.read()}")
    yield line.split()[-1]
    proc.terminate()
    assert proc.wait(timeout=30) == 0


@pytest.fixture(scope="module")
def py(tiny_bundle):
    with PyRuntime.load(tiny_bundle) as rt:
        yield rt


def test_openai_body_matches_the_python_runtime(server, py):
    body = client.chat_body(ROCKET, "image/jpeg", "What is this?")
    got, headers = client.embed(server, body)
    want = py.embed([body]).inputs_embeds
    assert got.shape == want.shape and headers["X-Num-Images"] == "1"
    assert np.linalg.norm(got - want) <= 1e-5 * np.linalg.norm(want)


@pytest.mark.parametrize("edit", [
    lambda b: b["messages"][1]["content"][0]["image_url"].update(url="https://example.com/cat.jpg"),
    lambda b: b["messages"][1]["content"][0]["image_url"].update(detail="low"),
    lambda b: b.update(n=2),
    lambda b: b["messages"][0].update(name="sys"),
])
def test_refusals_are_worded_as_in_python(server, py, edit):
    body = client.chat_body(ROCKET, "image/jpeg", "x")
    edit(body)
    with pytest.raises(RuntimeError) as cpp_err:
        client.embed(server, body)
    with pytest.raises(RequestError) as py_err:
        py.embed([body])
    assert str(cpp_err.value).startswith("HTTP 400: ")
    assert json.loads(str(cpp_err.value)[len("HTTP 400: "):])["error"] == py_err.value.reason
