"""vlfront.runtime.Processor: processor(messages, return_tensors=..., padding=...) over Runtime."""

from __future__ import annotations

import base64
import pathlib
import subprocess
import sys

import numpy as np
import pytest
import skimage

from vlfront.errors import RequestError
from vlfront.runtime import Processor, Runtime

DATA = pathlib.Path(skimage.__file__).parent / "data"
ROCKET = (DATA / "rocket.jpg").read_bytes()


@pytest.fixture(scope="module")
def rt(tiny_bundle):
    with Runtime.load(tiny_bundle) as runtime:
        yield runtime


@pytest.fixture(scope="module")
def processor(rt):
    return Processor(rt)


def short():
    return [{"role": "user", "content": "Hi"}]


def with_image():
    url = "data:image/jpeg;base64," + base64.b64encode(ROCKET).decode()
    return {"model": "m", "messages": [{"role": "user", "content": [
        {"type": "image_url", "image_url": {"url": url}}, {"type": "text", "text": "What is this?"}]}]}


def test_single_request_np(processor, rt):
    out = processor(short(), return_tensors="np")
    assert out["input_ids"].tolist() == [[151644, 872, 198, 13048, 151645, 198, 151644, 77091, 198]]
    assert out["attention_mask"].tolist() == [[1] * 9] and out["image_attention_mask"].sum() == 0
    assert out["pixel_values"].shape == (0, 224, 224, 3) and out["images_per_request"].tolist() == [0]
    assert out["input_ids"].dtype == np.int64


def test_batch_longest_padding_matches_the_runtime(processor, rt):
    batch = [short(), with_image()]
    out = processor(batch, return_tensors="np", padding=True, return_inputs_embeds=True)
    ref = rt.embed(batch)
    n = int(ref.attention_mask.sum(axis=1).max())
    assert out["input_ids"].shape == (2, n) and n == 3 + 198 + 4 + 5
    for name in ("input_ids", "attention_mask", "image_attention_mask", "inputs_embeds"):
        np.testing.assert_array_equal(out[name], getattr(ref, name)[:, :n])
    np.testing.assert_array_equal(out["pixel_values"], ref.pixel_values)
    assert out["images_per_request"].tolist() == [0, 1]
    assert out["input_ids"][0, 9:].tolist() == [151643] * (n - 9)  # right-padded with <|endoftext|>


def test_max_length_is_the_spec_layout_and_pixels_without_graphs(processor, rt):
    out = processor([with_image()], padding="max_length")
    ref = rt.embed([with_image()])
    np.testing.assert_array_equal(out["input_ids"], ref.input_ids)
    np.testing.assert_array_equal(out["pixel_values"], ref.pixel_values)
    assert "inputs_embeds" not in out and out["input_ids"].shape == (1, 1024)


def test_pt_gives_torch_tensors(processor):
    torch = pytest.importorskip("torch")
    out = processor(with_image(), return_tensors="pt", padding=True, return_inputs_embeds=True)
    assert isinstance(out["input_ids"], torch.Tensor) and out["input_ids"].dtype == torch.int64
    assert out["inputs_embeds"].dtype == torch.float32 and out["pixel_values"].dtype == torch.uint8
    np.testing.assert_array_equal(out["input_ids"].numpy(), processor(with_image())["input_ids"])


@pytest.mark.parametrize("kwargs, match", [
    ({"return_tensors": "tf"}, "return_tensors='tf'"),
    ({"padding": "left"}, "padding='left'"),
])
def test_bad_arguments(processor, kwargs, match):
    with pytest.raises(RequestError, match=match):
        processor(short(), **kwargs)


def test_bad_requests(processor):
    with pytest.raises(RequestError, match="padding=False gives ragged rows for 2 requests"):
        processor([short(), short()], padding=False)
    assert processor(short(), padding=False)["input_ids"].shape == (1, 9)
    with pytest.raises(RequestError, match="request 1: 'n' is refused"):
        processor([short(), {"messages": short(), "n": 3}])
    with pytest.raises(RequestError, match="non-empty list"):
        processor([])


def test_torch_is_imported_only_for_pt(tiny_bundle):
    code = (f"import sys; from vlfront.runtime import Processor; p = Processor.from_pretrained({str(tiny_bundle)!r}); "
            "p([{'role': 'user', 'content': 'Hi'}], return_tensors='np', return_inputs_embeds=True); "
            "print('torch' in sys.modules); p.close()")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "False"


def test_apply_chat_template_like_transformers_processors(processor, rt):
    ids = processor.apply_chat_template(short(), add_generation_prompt=True)
    assert ids == [[151644, 872, 198, 13048, 151645, 198, 151644, 77091, 198]]
    assert processor.apply_chat_template(short(), add_generation_prompt=False) == [ids[0][:-3]]
    out = processor.apply_chat_template([short(), with_image()], return_dict=True, return_tensors="np")
    np.testing.assert_array_equal(out["input_ids"], rt.embed([short(), with_image()]).input_ids[:, :210])
    with pytest.raises(RequestError, match="tokenize=False is not supported"):
        processor.apply_chat_template(short(), tokenize=False)
