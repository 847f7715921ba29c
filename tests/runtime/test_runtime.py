"""Runtime outputs against an independent computation from weights.safetensors (SPEC formulas)."""

import asyncio
import pathlib
import subprocess
import sys
import threading

import numpy as np
import pytest
import skimage
from PIL import Image, ImageOps
from safetensors.numpy import load_file

from vlfront.cli import main as cli_main
from vlfront.config import IMAGE_PAD_ID, PAD_ID
from vlfront.errors import QueueFullError, RequestError
from vlfront.runtime import Batcher, Runtime

DATA = pathlib.Path(skimage.__file__).parent / "data"
PHOTOS = [DATA / n for n in ("rocket.jpg", "astronaut.png", "coffee.png", "chelsea.png", "motorcycle_left.png")]


@pytest.fixture(scope="module")
def rt(tiny_bundle):
    with Runtime.load(tiny_bundle) as runtime:
        yield runtime


@pytest.fixture(scope="module")
def weights(tiny_bundle):
    return load_file(str(tiny_bundle / "weights.safetensors"))


def spec_pixels(path):
    """SPEC 1.4, written out."""
    im = ImageOps.exif_transpose(Image.open(path)).convert("RGB")
    return np.asarray(im.resize((224, 224), Image.BICUBIC), np.uint8)


def spec_visual_tokens(w, px):
    """SPEC 1.5 in float64 numpy: per-channel normalisation, 16x16 stride-16 conv, + sincos2d."""
    mean, std = np.array([0.485, 0.456, 0.406]), np.array([0.229, 0.224, 0.225])
    x = (px.astype(np.float64) / 255 - mean) / std  # HWC
    patches = x.reshape(14, 16, 14, 16, 3).transpose(0, 2, 4, 1, 3).reshape(196, 3 * 16 * 16)  # [k, c*h*w]
    W = w["patch_embed.weight"].astype(np.float64).reshape(w["patch_embed.weight"].shape[0], -1)
    d = W.shape[0]
    q = d // 4
    omega = 10000.0 ** (-np.arange(q) / q)
    r, c = np.divmod(np.arange(196), 14)
    pos = np.concatenate([np.sin(r[:, None] * omega), np.cos(r[:, None] * omega),
                          np.sin(c[:, None] * omega), np.cos(c[:, None] * omega)], 1)
    return patches @ W.T + w["patch_embed.bias"] + pos


def spec_inputs_embeds(w, input_ids, visual):
    """SPEC 1.6 in numpy, position by position."""
    tok, posw, mod = w["token_embed.weight"], w["position_embed.weight"], w["modality_embed.weight"]
    out = np.empty(input_ids.shape + (tok.shape[1],))
    first = 0
    for b, row in enumerate(input_ids):
        j = 0
        for t, i in enumerate(row):
            if i == IMAGE_PAD_ID:
                out[b, t] = visual[first + j // 196][j % 196] + mod[1]
                j += 1
            else:
                out[b, t] = tok[i].astype(np.float64) + posw[t] + mod[0]
        first += j // 196
    return out


def req(*items, system=None):
    content = [{"type": "image", "image": i} if not isinstance(i, str) or i.endswith((".jpg", ".png"))
               else {"type": "text", "text": i} for i in items]
    msgs = [{"role": "system", "content": system}] if system else []
    return msgs + [{"role": "user", "content": content}]


def test_outputs_equal_spec_formulas_on_real_photos(rt, weights, qwen_tokenizer):
    requests = [
        req(str(PHOTOS[0]), "这是什么火箭？ Describe it in detail."),
        req("Compare:", str(PHOTOS[1]), "and", str(PHOTOS[2]), str(PHOTOS[3]), "— which is 🐱?", system="Be brief."),
        req("def f(x):\n    return x ** 2  # 只有文本\n\t<|image_pad|> stays text"),
    ]
    out = rt.embed(requests)
    assert out.images_per_request == [1, 3, 0]
    pixels = [spec_pixels(p) for p in (PHOTOS[0], PHOTOS[1], PHOTOS[2], PHOTOS[3])]
    np.testing.assert_array_equal(out.pixel_values, np.stack(pixels))
    visual = [spec_visual_tokens(weights, px) for px in pixels]
    expected = spec_inputs_embeds(weights, out.input_ids, visual)
    err = np.abs(out.inputs_embeds - expected).max() / np.abs(expected).max()
    assert err <= 1e-4, err
    assert out.inputs_embeds.dtype == np.float32 and out.inputs_embeds.shape == (3, 1024, 64)
    # The look-alike in request 2 opened no image slot.
    assert (out.input_ids[2] == IMAGE_PAD_ID).sum() == 0
    np.testing.assert_array_equal(out.image_attention_mask, (out.input_ids == IMAGE_PAD_ID).astype(np.int64))
    n = out.attention_mask.sum(1)
    for b in range(3):
        assert (out.input_ids[b, n[b]:] == PAD_ID).all() and out.attention_mask[b, : n[b]].all()
    # The text run of request 0 is the tokenizer's encoding of the text.
    text_ids = qwen_tokenizer.encode("这是什么火箭？ Describe it in detail.")
    row = out.input_ids[0].tolist()
    start = row.index(151653) + 1
    assert row[start : start + len(text_ids)] == text_ids


def test_cache_hit_gives_identical_values_and_skips_decoding(tiny_bundle):
    with Runtime.load(tiny_bundle) as rt:
        first = rt.embed([req(str(PHOTOS[4]), "x")])
        second = rt.embed([req(PHOTOS[4].read_bytes(), "x")])  # same bytes, other source type
        assert rt.cache.stats()["hits"] == 1 and rt.cache.stats()["misses"] == 1
        np.testing.assert_array_equal(first.inputs_embeds, second.inputs_embeds)
        np.testing.assert_array_equal(first.pixel_values, second.pixel_values)


def test_cache_bound_holds_under_concurrent_load(tiny_bundle):
    entry = 196 * 64 * 4 + 224 * 224 * 3
    with Runtime.load(tiny_bundle, cache_bytes=3 * entry) as rt:
        rng = np.random.default_rng(0)
        images = [rng.integers(0, 256, (40, 50, 3), dtype=np.uint8) for _ in range(12)]
        errors = []

        def worker(k):
            try:
                for i in range(6):
                    rt.embed([req(images[(k * 5 + i) % 12], "t")])
                    assert rt.cache.stats()["bytes"] <= 3 * entry
            except Exception as e:  # surfaced below
                errors.append(e)

        threads = [threading.Thread(target=worker, args=(k,)) for k in range(4)]
        [t.start() for t in threads]
        [t.join() for t in threads]
        assert not errors
        s = rt.cache.stats()
        assert s["entries"] <= 3 and s["bytes"] <= 3 * entry and s["evictions"] > 0
        assert s["hits"] + s["misses"] == 24


def test_float16_output_on_request(rt):
    a = rt.embed([req("hello")])
    b = rt.embed([req("hello")], output_dtype="float16")
    assert b.inputs_embeds.dtype == np.float16
    np.testing.assert_allclose(b.inputs_embeds.astype(np.float32), a.inputs_embeds, rtol=1e-3, atol=1e-4)


def test_bad_request_names_its_index_and_embed_each_isolates_it(rt):
    good = req(str(PHOTOS[0]), "ok")
    bad = req(b"\x89PNG\r\n\x1a\n broken", "x")
    with pytest.raises(RequestError, match="request 1"):
        rt.embed([good, bad])
    before = rt.cache.stats()
    with pytest.raises(RequestError, match="request 1: .*role"):
        rt.embed([req(str(PHOTOS[3]), "x"), [{"role": "robot", "content": "x"}]])
    assert rt.cache.stats()["misses"] == before["misses"]  # refused before any image was looked at
    res = rt.embed_each([good, bad, [{"role": "robot", "content": "x"}]])
    assert isinstance(res[1], RequestError) and res[1].index == 1
    assert isinstance(res[2], RequestError) and res[2].index == 2
    np.testing.assert_array_equal(res[0].inputs_embeds, rt.embed([good]).inputs_embeds)


def test_batcher_threads_match_sequential_results(rt):
    requests = [req(str(PHOTOS[i % 4]), f"question {i} 问题") for i in range(16)]
    expected = [rt.embed([r]).inputs_embeds for r in requests]
    with Batcher(rt, max_batch=4, max_wait_s=0.01) as batcher:
        futures = [None] * 16

        def submit(i):
            futures[i] = batcher.submit(requests[i])

        threads = [threading.Thread(target=submit, args=(i,)) for i in range(16)]
        [t.start() for t in threads]
        [t.join() for t in threads]
        results = [f.result(timeout=60) for f in futures]
    for r, e in zip(results, expected):
        np.testing.assert_array_equal(r.inputs_embeds, e)
    assert batcher.requests == 16 and batcher.batches < 16  # some requests were batched together


def test_batcher_bad_request_fails_alone_and_asyncio_form(rt):
    async def run(batcher):
        return await asyncio.gather(batcher.embed(req("fine")), batcher.embed(req(np.zeros((3, 3), np.float32))),
                                    return_exceptions=True)

    with Batcher(rt, max_batch=8, max_wait_s=0.05) as batcher:
        ok, bad = asyncio.run(run(batcher))
    assert isinstance(bad, RequestError) and "image" in str(bad)
    np.testing.assert_array_equal(ok.inputs_embeds, rt.embed([req("fine")]).inputs_embeds)


def test_batcher_queue_full_and_closed(rt):
    gate = threading.Event()

    class Slow:
        def embed_each(self, requests, output_dtype=None):
            gate.wait(10)
            return rt.embed_each(requests)

    batcher = Batcher(Slow(), max_batch=1, max_wait_s=0, max_queue=2)
    futures = [batcher.submit(req("a"))]
    for _ in range(50):  # wait until the worker holds the first request
        if batcher._queue.qsize() == 0:
            break
        threading.Event().wait(0.01)
    futures += [batcher.submit(req("b")), batcher.submit(req("c"))]
    with pytest.raises(QueueFullError, match="queue is full"):
        batcher.submit(req("d"))
    gate.set()
    batcher.close()
    assert all(f.result().inputs_embeds.shape == (1, 1024, 64) for f in futures)
    with pytest.raises(Exception, match="closed"):
        batcher.submit(req("e"))


def test_runtime_import_pulls_in_neither_torch_nor_onnx(tiny_bundle):
    code = ("import sys; from vlfront.runtime import Runtime; rt = Runtime.load(sys.argv[1]); "
            "rt.embed([[{'role': 'user', 'content': 'hi'}]]); "
            "bad = [m for m in ('torch', 'onnx') if m in sys.modules]; print(bad); sys.exit(1 if bad else 0)")
    r = subprocess.run([sys.executable, "-c", code, str(tiny_bundle)], capture_output=True, text=True)
    assert r.returncode == 0, r.stdout + r.stderr


def test_cli_embed_writes_the_runtime_output(tiny_bundle, tmp_path, capsys, rt):
    out = tmp_path / "e.npy"
    assert cli_main(["embed", "--bundle", str(tiny_bundle), "--image", str(PHOTOS[0]), "--text", "hi",
                     "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "inputs_embeds [1, 1024, 64]" in printed and "dropped 0" in printed and "patch_embed" in printed
    expected = rt.embed([[{"role": "user", "content": [{"type": "image", "image": str(PHOTOS[0])},
                                                       {"type": "text", "text": "hi"}]}]]).inputs_embeds
    np.testing.assert_array_equal(np.load(out), expected)
    assert cli_main(["embed", "--bundle", str(tmp_path / "nope"), "--text", "x"]) == 2
    assert "no manifest.json" in capsys.readouterr().err


def test_a_broken_image_shared_by_two_requests_fails_both_and_spares_the_third(rt):
    broken = b"\xff\xd8\xff\xe0 not really a jpeg"
    res = rt.embed_each([req(broken, "a"), req("fine"), req("b", broken)])
    assert isinstance(res[0], RequestError) and res[0].index == 0
    assert isinstance(res[2], RequestError) and res[2].index == 2 and str(res[2]).startswith("request 2: ")
    assert res[1].inputs_embeds.shape == (1, 1024, 64)
