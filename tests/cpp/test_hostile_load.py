"""Both example servers under a mixed hostile load (runtime/cpp/tools/hostile_load.py, short run).

Good requests run while a 100,000-deep JSON body, a 256 MiB chunked upload, invalid UTF-8,
8 stalled uploads (1 byte/s), a 30 MiB text, a 30 MiB single word and a 64 MiB header line are in
flight. Every good answer must be bitwise equal to the runtime's own embed of that request, no
answer may be a 5xx other than 503 with Retry-After, each hostile request gets its own 4xx,
/healthz answers at the end and the peak RSS stays bounded.
"""

from __future__ import annotations

import importlib.util
import io
import json
import pathlib
import sys

import numpy as np
import pytest

from vlfront.runtime import Runtime as PyRuntime
from vlfront_ctypes import Runtime as CppRuntime

TOOL = pathlib.Path(__file__).resolve().parents[2] / "runtime" / "cpp" / "tools" / "hostile_load.py"
spec = importlib.util.spec_from_file_location("hostile_load", TOOL)
hostile_load = importlib.util.module_from_spec(spec)
sys.modules["hostile_load"] = hostile_load  # dataclasses look their module up
spec.loader.exec_module(hostile_load)

MAX_BODY_MB = 32
# Peak RSS over idle: the largest body may be held a few times over while it is parsed
# (bytes, JSON value, the runtime's request) and a 413'd one up to the limit: 12 bodies.
RSS_BOUND_MB = 12 * MAX_BODY_MB
EXPECT = {  # hostile class -> (status, words in the error)
    "deep_json": (400, "the body nests arrays/objects deeper than 64 levels"),
    "invalid_utf8": (400, "the body is not valid UTF-8: byte 0xff at offset 39"),
    "chunked_huge": (413, "over the limit of 33554432 bytes"),
}


def reference(runtime, body: dict) -> np.ndarray:
    return runtime.embed([hostile_load.as_runtime_request(body)])["inputs_embeds"] if isinstance(runtime, CppRuntime) \
        else runtime.embed([hostile_load.as_runtime_request(body)]).inputs_embeds


def check_run(run: dict, runtime) -> None:
    answers = run["clean"] + run["mixed"] + run["hostile"]
    for a in answers:
        assert a.status is None or a.status < 500 or (a.status == 503 and "retry-after" in a.headers), \
            (a.kind, a.status, a.body[:300])
    want = [reference(runtime, b) for b in run["bodies"]]
    for i, a in enumerate(run["clean"] + run["mixed"]):
        assert a.status == 200, (i, a.status, a.body[:300])
        np.testing.assert_array_equal(np.load(io.BytesIO(a.body)), want[i % len(want)])
    hostile = {a.kind: a for a in run["hostile"]}
    assert sorted(hostile) == ["big_text", "big_word", "chunked_huge", "deep_json", "invalid_utf8", "long_header"]
    for kind, (status, words) in EXPECT.items():
        a = hostile[kind]
        assert a.status == status and words in json.loads(a.body)["error"], (kind, a.status, a.body[:300])
    assert hostile["long_header"].status in (400, 431)
    assert hostile["big_text"].status == 200 and int(hostile["big_text"].headers["x-dropped-tokens"]) > 0
    assert hostile["big_word"].status in (200, 400), hostile["big_word"].body[:300]
    assert len(run["stalled"]) == 8
    assert run["healthz"] == 200
    assert run["rss_peak_mb"] - run["rss_idle_mb"] <= RSS_BOUND_MB, (run["rss_idle_mb"], run["rss_peak_mb"])


@pytest.mark.parametrize("which", ["cpp", "python"])
def test_mixed_hostile_load(which, request, tiny_bundle):
    if which == "cpp":
        binary = request.getfixturevalue("cpp_http_server_bin")
        server = hostile_load.start_cpp(binary, tiny_bundle, MAX_BODY_MB)
        runtime = CppRuntime(request.getfixturevalue("cpp_lib"), tiny_bundle, threads=1)
    else:
        server = hostile_load.start_python(tiny_bundle, MAX_BODY_MB)
        runtime = PyRuntime.load(tiny_bundle)
    try:
        run = hostile_load.run_load(server, n_good=12)
        assert server.proc.poll() is None, "the server died"
    finally:
        code = server.stop()
    try:
        check_run(run, runtime)
    finally:
        runtime.close()
    assert code in (0, None) or which == "python"  # uvicorn may exit by the signal
