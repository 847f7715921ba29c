"""A real tritonserver (nvidia-pytriton wheel) serving a repository that `write_repository` made."""

from __future__ import annotations

import concurrent.futures as cf
import re
import time
import urllib.request

import numpy as np
import pytest

from triton_helpers import OUTPUTS, assert_same, chat, expect, infer, random_png, triton_or_skip
from vlfront.runtime import Runtime
from vlfront.runtime.triton import RepositoryOptions, TritonServer, encode_request, write_repository
from vlfront.runtime.triton.request import encode_request_images

httpclient = pytest.importorskip("tritonclient.http", reason="tritonclient comes with `make setup`")
grpcclient = pytest.importorskip("tritonclient.grpc", reason="tritonclient comes with `make setup`")
from tritonclient.utils import InferenceServerException  # noqa: E402

@pytest.fixture(scope="module")
def server(tiny_bundle, tmp_path_factory):
    triton_or_skip()
    repo = tmp_path_factory.mktemp("triton") / "repo"
    # A long queue delay so that concurrent requests are seen batched even on a loaded 2-core machine.
    write_repository(tiny_bundle, repo, RepositoryOptions(max_batch=8, max_queue_delay_us=50_000, threads=1))
    with TritonServer(repo) as s:
        yield s


@pytest.fixture(scope="module")
def reference(tiny_bundle):
    rt = Runtime.load(tiny_bundle, cache_bytes=0)
    yield rt
    rt.close()


def model_stats(server) -> dict:
    client = httpclient.InferenceServerClient(server.http_url)
    s = client.get_inference_statistics("vlfront")["model_stats"][0]
    client.close()
    return {"inference_count": int(s["inference_count"]), "execution_count": int(s["execution_count"]),
            "success": int(s["inference_stats"]["success"]["count"]),
            "fail": int(s["inference_stats"]["fail"]["count"])}


def stats_after(server, before: dict, requests: int, timeout_s: float = 10.0) -> dict:
    """Statistics once `requests` more inferences are counted (Triton counts a request when it is released,
    which can be just after its client has the response)."""
    deadline = time.monotonic() + timeout_s
    while True:
        after = model_stats(server)
        if after["inference_count"] - before["inference_count"] >= requests or time.monotonic() > deadline:
            return after
        time.sleep(0.05)


def test_concurrent_http_and_grpc_match_runtime_embed_bitwise(server, reference, photo_bytes):
    chats = [chat(photo_bytes[i % len(photo_bytes)], f"describe picture {i}") for i in range(16)]
    chats += [chat(None, "text only"), [{"role": "user", "content": [
        {"type": "image", "image": photo_bytes[0]}, {"type": "text", "text": "and"},
        {"type": "image", "image": photo_bytes[1]}]}]]
    before = model_stats(server)
    with cf.ThreadPoolExecutor(12) as pool:
        futures = [pool.submit(infer, server, encode_request(c), "http" if i % 2 else "grpc")
                   for i, c in enumerate(chats)]
        results = [f.result() for f in futures]
    for messages, got in zip(chats, results):
        assert_same(got, expect(reference, messages))
    after = stats_after(server, before, len(chats))
    inferences = after["inference_count"] - before["inference_count"]
    executions = after["execution_count"] - before["execution_count"]
    assert inferences == len(chats)
    assert executions < inferences, f"dynamic batching: {executions} executions for {inferences} requests"


@pytest.mark.parametrize("bad, reason", [
    (b"{not json", "not valid JSON"),
    (b'{"messages": "x"}', 'the "request" tensor holds one JSON object'),
    (b'{"messages": [{"role": "user", "content": [{"type": "image", "image_base64": "%%%"}]}]}',
     "image_base64 is not valid base64"),
    (encode_request(chat(b"\x89PNG\r\n\x1a\n" + b"\0" * 64, "broken")), "image"),
    (b'{"messages": [{"role": "user", "content": [{"type": "image", "image": "/etc/passwd"}]}]}',
     "file paths are not accepted"),
    (b'{"messages": [{"role": "user", "content": "caf\xe9"}]}',
     "the request is not valid UTF-8: byte 0xe9 at offset 46"),
    (b"[" * 100_000, "the request nests arrays/objects deeper than 64 levels"),
])
def test_a_bad_request_fails_alone_with_our_message(server, reference, bad, reason):
    good = [chat(random_png(i), f"good {i}") for i in range(5)]
    before = model_stats(server)
    with cf.ThreadPoolExecutor(6) as pool:
        futures = [pool.submit(infer, server, encode_request(c), "http") for c in good]
        bad_future = pool.submit(infer, server, bad, "grpc" if len(bad) % 2 else "http")
        results = [f.result() for f in futures]
        with pytest.raises(InferenceServerException, match=re.escape(reason)):
            bad_future.result()
    for messages, got in zip(good, results):
        assert_same(got, expect(reference, messages))
    after = stats_after(server, before, 6)
    # Triton 2.51 counts a python-backend response that carries an error as a success (observed here).
    assert after["inference_count"] - before["inference_count"] == 6
    client = httpclient.InferenceServerClient(server.http_url)
    assert client.is_model_ready("vlfront")  # and serving: the good requests above came back
    client.close()


def test_a_multi_element_request_is_answered_in_order(server, reference):
    chats = [chat(random_png(40 + i), f"row {i}") for i in range(3)]
    client = httpclient.InferenceServerClient(server.http_url)
    inp = httpclient.InferInput("request", [3, 1], "BYTES")
    inp.set_data_from_numpy(np.array([[encode_request(c)] for c in chats], dtype=object))
    result = client.infer("vlfront", [inp])
    client.close()
    want = reference.embed(chats)
    assert np.array_equal(result.as_numpy("inputs_embeds"), want.inputs_embeds)
    assert np.array_equal(result.as_numpy("input_ids"), want.input_ids)


def test_ready_live_and_metrics_count_requests(server):
    http = httpclient.InferenceServerClient(server.http_url)
    grpc = grpcclient.InferenceServerClient(server.grpc_url)
    assert http.is_server_live() and http.is_server_ready() and http.is_model_ready("vlfront")
    assert grpc.is_server_live() and grpc.is_server_ready() and grpc.is_model_ready("vlfront")
    http.close()
    grpc.close()
    infer(server, encode_request(chat(random_png(77), "counted")), "http")

    def metric(metrics: str, name: str) -> int:
        m = re.search(rf'^{name}\{{[^}}]*model="vlfront"[^}}]*\}} (\S+)$', metrics, re.M)
        assert m, f"{name} missing from {server.metrics_url}"
        return int(float(m.group(1)))

    names = {"nv_inference_request_success": "success", "nv_inference_request_failure": "fail",
             "nv_inference_count": "inference_count", "nv_inference_exec_count": "execution_count"}
    deadline = time.monotonic() + 10
    while True:  # both are counted when a request is released, which can trail its response a little
        stats = model_stats(server)
        metrics = urllib.request.urlopen(server.metrics_url, timeout=5).read().decode()
        got = {key: metric(metrics, name) for name, key in names.items()}
        if got == {key: stats[key] for key in names.values()} or time.monotonic() > deadline:
            break
        time.sleep(0.1)
    assert got == {key: stats[key] for key in names.values()}
    assert got["success"] > 0 and got["inference_count"] >= got["execution_count"] > 0


def test_a_tampered_bundle_is_refused_at_model_load(tiny_bundle, tmp_path):
    import shutil

    from vlfront.runtime.triton import ServiceError

    triton_or_skip()
    bundle = tmp_path / "tampered"
    shutil.copytree(tiny_bundle, bundle)
    weights = bundle / "weights.safetensors"
    data = bytearray(weights.read_bytes())
    data[-1] ^= 0xFF
    weights.write_bytes(bytes(data))
    repo = write_repository(bundle, tmp_path / "repo")
    with pytest.raises(ServiceError, match="weights.safetensors") as info:
        TritonServer(repo, ready_timeout_s=60).start()
    assert "sha256" in str(info.value) and "failed to load 'vlfront'" in str(info.value)


def test_the_ensembles_preprocess_step_serves_on_cpu(tiny_bundle, reference, tmp_path, photo_bytes):
    """The ensemble's python step runs here (its GPU steps cannot): input_ids and pixels equal the runtime's."""
    import shutil

    triton_or_skip()
    full = write_repository(tiny_bundle, tmp_path / "full", RepositoryOptions(layout="ensemble"))
    repo = tmp_path / "pre"
    repo.mkdir()
    shutil.copytree(full / "vlfront_preprocess", repo / "vlfront_preprocess")
    messages = [{"role": "user", "content": [{"type": "image", "image": photo_bytes[2]},
                                             {"type": "text", "text": "two"},
                                             {"type": "image", "image": photo_bytes[3]}]}]
    with TritonServer(repo) as s:
        client = httpclient.InferenceServerClient(s.http_url)
        inp = httpclient.InferInput("request", [1], "BYTES")
        inp.set_data_from_numpy(np.array([encode_request(messages)], dtype=object))
        result = client.infer("vlfront_preprocess", [inp])
        bad = httpclient.InferInput("request", [1], "BYTES")
        bad.set_data_from_numpy(np.array([b"{"], dtype=object))
        with pytest.raises(InferenceServerException, match="not valid JSON"):
            client.infer("vlfront_preprocess", [bad])
        client.close()
    want = reference.embed([messages])
    assert np.array_equal(result.as_numpy("input_ids"), want.input_ids)
    assert np.array_equal(result.as_numpy("image_attention_mask"), want.image_attention_mask)
    assert np.array_equal(result.as_numpy("pixel_values"), want.pixel_values)


def test_server_runs_with_heap_kept_response_buffers(server):
    """TritonServer starts tritonserver with glibc's mmap/trim thresholds at 32 MB (GLIBC_TUNABLES): the 3 MB
    response buffers stay in the heap (compute_output 3.1 -> 1.3-1.8 ms here, docs/triton.md); the stub
    inherits them and still applies runtime/memory.py's own settings."""
    from vlfront.runtime.memory import MMAP_BYTES
    from vlfront.runtime.triton.services import server_malloc_env

    environ = open(f"/proc/{server.proc.pid}/environ", "rb").read().split(b"\0")
    tunables = f"glibc.malloc.mmap_threshold={MMAP_BYTES}:glibc.malloc.trim_threshold={MMAP_BYTES}"
    assert server_malloc_env() == {"GLIBC_TUNABLES": tunables}
    # Debian's glibc 2.36 applies both, then rewrites the variable that children see to its first entry.
    assert any(e.startswith(f"GLIBC_TUNABLES=glibc.malloc.mmap_threshold={MMAP_BYTES}".encode()) for e in environ)


def infer_with_images(server, rows: list[bytes], files: list[list[bytes]], protocol: str) -> dict:
    """One Triton request: `request` [k, 1] and `images` [k, n] (rows of encoded files)."""
    mod = httpclient if protocol == "http" else grpcclient
    client = mod.InferenceServerClient(server.http_url if protocol == "http" else server.grpc_url)
    req = mod.InferInput("request", [len(rows), 1], "BYTES")
    req.set_data_from_numpy(np.array([[r] for r in rows], dtype=object))
    images = mod.InferInput("images", [len(files), len(files[0])], "BYTES")
    images.set_data_from_numpy(np.array(files, dtype=object))
    try:
        result = client.infer("vlfront", [req, images], outputs=[mod.InferRequestedOutput(n) for n in OUTPUTS])
    finally:
        client.close()
    return {n: result.as_numpy(n) for n in OUTPUTS}


@pytest.mark.parametrize("protocol", ["http", "grpc"])
def test_images_input_is_bitwise_equal_to_runtime_embed(server, reference, photo_bytes, protocol):
    """Photos in the `images` input, named by image_index: the same outputs as the runtime (and as base64)."""
    one = chat(photo_bytes[0], "one photo")
    body, files = encode_request_images(one)
    assert json_items(body) == [{"type": "image", "image_index": 0}, {"type": "text", "text": "one photo"}]
    assert_same(infer_with_images(server, [body], [files], protocol), expect(reference, one))
    # Two photos, listed in the other order than they appear: the index decides.
    two = [{"role": "user", "content": [{"type": "image", "image": photo_bytes[1]}, {"type": "text", "text": "and"},
                                        {"type": "image", "image": photo_bytes[2]}]}]
    body = (b'{"messages": [{"role": "user", "content": [{"type": "image", "image_index": 1}, {"type": "text", '
            b'"text": "and"}, {"type": "image", "image_index": 0}]}]}')
    assert_same(infer_with_images(server, [body], [[photo_bytes[2], photo_bytes[1]]], protocol),
                expect(reference, two))
    # Two elements, rows padded with an empty element that no item names.
    chats = [chat(photo_bytes[3], "row 0"), chat(None, "row 1, text only")]
    rows = [encode_request_images(c) for c in chats]
    got = infer_with_images(server, [b for b, _ in rows], [rows[0][1], [b""]], protocol)
    want = reference.embed(chats)
    assert np.array_equal(got["inputs_embeds"], want.inputs_embeds)
    assert np.array_equal(got["input_ids"], want.input_ids)


def json_items(body: bytes) -> list:
    import json

    return json.loads(body)["messages"][0]["content"]


@pytest.mark.parametrize("rows, files, reason", [
    ([b'{"messages": [{"role": "user", "content": [{"type": "image", "image_index": 1}]}]}'], [[b"x"]],
     'image_index 1 is out of range: this element\'s row of the "images" input has 1 elements'),
    ([b'{"messages": [{"role": "user", "content": [{"type": "image", "image_index": true}]}]}'], [[b"x"]],
     "an image_index of type bool"),
    ([b'{"messages": [{"role": "user", "content": [{"type": "image", "image_index": 0, "x": 1}]}]}'], [[b"x"]],
     "got keys ['image_index', 'type', 'x']"),
    ([b'{"messages": [{"role": "user", "content": [{"type": "image", "image_index": 0}]}]}'], [[b""]],
     "empty (0 bytes)"),
    ([b'{"messages": [{"role": "user", "content": [{"type": "text", "text": "a"}]}]}'] * 2, [[b"x", b"y"]],
     "batch size does not match other inputs"),  # Triton's own check, before the model (ours backs it up)
])
def test_a_bad_images_input_fails_alone_with_our_message(server, reference, rows, files, reason):
    with pytest.raises(InferenceServerException, match=re.escape(reason)):
        infer_with_images(server, rows, files, "grpc")
    good = chat(random_png(91), "after a bad images input")
    assert_same(infer(server, encode_request(good), "http"), expect(reference, good))


def test_image_index_without_the_images_input_is_refused(server):
    body = b'{"messages": [{"role": "user", "content": [{"type": "image", "image_index": 0}]}]}'
    with pytest.raises(InferenceServerException, match='which this request does not have'):
        infer(server, body, "http")


@pytest.mark.parametrize("protocol", ["http", "grpc"])
def test_only_the_requested_outputs_come_back(server, reference, photo_bytes, protocol):
    """Outputs the client names are the only ones the model builds (Triton lists all when none are named)."""
    messages = chat(photo_bytes[0], "only some outputs")
    want = expect(reference, messages)
    mod = httpclient if protocol == "http" else grpcclient
    client = mod.InferenceServerClient(server.http_url if protocol == "http" else server.grpc_url)
    inp = mod.InferInput("request", [1, 1], "BYTES")
    inp.set_data_from_numpy(np.array([[encode_request(messages)]], dtype=object))
    try:
        some = client.infer("vlfront", [inp], outputs=[mod.InferRequestedOutput(n)
                                                        for n in ("dropped_tokens", "inputs_embeds")])
        every = client.infer("vlfront", [inp])  # none named: all five
    finally:
        client.close()
    for n in OUTPUTS:
        if n in ("dropped_tokens", "inputs_embeds"):
            assert np.array_equal(some.as_numpy(n), want[n]), n
        else:
            assert some.as_numpy(n) is None, n
    assert_same({n: every.as_numpy(n) for n in OUTPUTS}, want)


def test_the_benchmarks_raw_http_client_matches_runtime_embed(server, reference, photo_bytes):
    """`bench.py`'s RawHttpClient (http.client + the binary-tensor extension): the same inputs_embeds,
    with the photo as image_base64 and in the `images` input."""
    from vlfront.runtime.triton.bench import RawHttpClient

    messages = chat(photo_bytes[1], "raw http")
    want = expect(reference, messages)["inputs_embeds"]
    client = RawHttpClient(server.http_url)
    for body in (encode_request(messages), encode_request_images(messages)):
        got = client(body)
        assert got.dtype == want.dtype and np.array_equal(got, want)
    with pytest.raises(RuntimeError, match="HTTP 400"):
        client(b'{"messages": 7}')


def test_a_fast_decode_repository_serves_the_fast_runtimes_output(tiny_bundle, tmp_path):
    """`vlfront triton --decode fast`: the model decodes as Runtime.load(decode="fast"), not as exact."""
    from vlfront.runtime.bench_photos import camera_photo

    triton_or_skip()
    photo = camera_photo(3, "JPEG", "coffee.png")  # 2048x1536: fast decodes it at 1/2
    messages = chat(photo, "fast decode")
    repo = write_repository(tiny_bundle, tmp_path / "repo", RepositoryOptions(decode="fast", threads=1))
    with Runtime.load(tiny_bundle, cache_bytes=0, decode="fast") as fast, \
            Runtime.load(tiny_bundle, cache_bytes=0) as exact, TritonServer(repo) as s:
        got = infer(s, encode_request(messages), "http")
        assert_same(got, expect(fast, messages))
        assert not np.array_equal(got["inputs_embeds"], expect(exact, messages)["inputs_embeds"])
