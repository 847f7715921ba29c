"""Seed corpora for the libFuzzer targets (make cpp-fuzz): small valid and near-valid inputs.

    python runtime/cpp/fuzz/make_seeds.py OUT_DIR

writes OUT_DIR/<target>/seed_N for each target in fuzz/CMakeLists.txt. Everything is made
here (Pillow images, the exporter's tokenizer.json writer on a 300-token ranks table, a manifest
shaped like docs/bundle.md); nothing is downloaded.
"""

from __future__ import annotations

import base64
import io
import json
import pathlib
import sys


def images() -> list[bytes]:
    from PIL import Image

    out = []
    img = Image.new("RGB", (23, 17), (200, 30, 90))
    for fmt, kw in (("PNG", {}), ("JPEG", {"quality": 80}), ("JPEG", {"progressive": True})):
        buf = io.BytesIO()
        img.save(buf, fmt, **kw)
        out.append(buf.getvalue())
    buf = io.BytesIO()
    exif = Image.Exif()
    exif[0x0112] = 6  # orientation: rotate 90
    img.save(buf, "JPEG", exif=exif.tobytes())
    out.append(buf.getvalue())
    buf = io.BytesIO()
    Image.new("LA", (5, 9)).save(buf, "PNG")
    out.append(buf.getvalue())
    return out


def requests(pngs: list[bytes]) -> list[bytes]:
    b64 = base64.b64encode(pngs[0]).decode()
    user = [{"role": "user", "content": "Hello, 世界!"}]
    reqs = [
        user,
        {"messages": user, "add_generation_prompt": False},
        [{"role": "system", "content": "be brief"},
         {"role": "user", "content": [{"type": "image", "image": {"base64": b64}},
                                      {"type": "text", "text": "what is this?"}]}],
        [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": f"data:image/png;base64,{b64}"}}]}],
        {"messages": user, "model": "x", "temperature": 0.5, "stream": False},
        [{"role": ["user"], "content": 3}],
        [{"role": "user", "content": [{"type": "text", "text": "\u0000<|im_start|>\ud7ff"}]}],
    ]
    return [json.dumps(r).encode() for r in reqs] + [b'[{"role":"user","content":"\\ud83d\\ude00"}]']


def manifest() -> bytes:
    tensor = {"name": "x", "dtype": "float32", "shape": [-1, 64]}
    return json.dumps({
        "format": "vlfront-bundle", "schema_version": 1, "vlfront_version": "0.1.0",
        "config": {"hidden_size": 64, "image_size": 224, "patch_size": 16, "tokens_per_image": 196,
                   "max_seq_len": 1024, "max_text_tokens": 512, "vocab_rows": 151936,
                   "image_mean": [0.485, 0.456, 0.406], "image_std": [0.229, 0.224, 0.225],
                   "vision_pos": "sincos2d", "seed": 0},
        "special_ids": {"im_start": 151644, "im_end": 151645, "pad": 151643, "image_pad": 151655,
                        "vision_start": 151652, "vision_end": 151653},
        "tokenizer": {"file": "tokenizer.json", "kind": "tokenizer.json"},
        "files": {"tokenizer.json": {"size": 10, "sha256": "0" * 64},
                  "fusion.onnx": {"size": 10, "sha256": "1" * 64}},
        "graphs": {"fusion": {"fp32": {"file": "fusion.onnx", "external_data": [],
                                       "inputs": [tensor], "outputs": [tensor]}}},
        "calibration": {}, "engines": {},
    }, indent=1).encode()


def tokenizer_json() -> bytes:
    from vlfront.export.tokenizer_asset import build_tokenizer_json

    ranks = {bytes([b]): i for i, b in enumerate(range(256))}
    for i, word in enumerate([b"he", b"ll", b"hell", b"hello", b" w", b" wo", b"or", b"ld"]):
        ranks[word] = 256 + i
    return build_tokenizer_json(ranks)


def http() -> list[bytes]:
    body = b'{"messages":[{"role":"user","content":"hi"}]}'
    return [
        b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n",
        b"POST /v1/embed HTTP/1.1\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n" % len(body) + body,
        b"POST /v1/embed HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n3;x=y\r\nabc\r\n0\r\nT: 1\r\n\r\n",
        b"GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\nGET /a HTTP/1.1\r\n\r\n",
    ]


def main(out: str) -> None:
    root = pathlib.Path(out)
    pics = images()
    onnx = [b"\x08\x07\x12\x04test"]
    try:  # a real ONNX file with external data when the onnx package is there (make setup installs it)
        from onnx import TensorProto, helper

        t = helper.make_tensor("w", TensorProto.FLOAT, [2], [1.0, 2.0])
        t.ClearField("float_data")
        t.data_location = TensorProto.EXTERNAL
        t.external_data.add(key="location", value="weights.bin")
        t.external_data.add(key="offset", value="0")
        graph = helper.make_graph([helper.make_node("Identity", ["w"], ["y"])], "g", [],
                                  [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2])], [t])
        onnx.append(helper.make_model(graph).SerializeToString())
    except ImportError:
        pass
    deep = b"[" * 5000 + b"]" * 5000  # near and past the depth limit: where recursion used to bite
    edge = [b'[{"role": ' + b"[" * n + b"]" * n + b', "content": "hi"}]' for n in (62, 63)]
    seeds = {"request_json": requests(pics) + edge + [deep],
             "manifest": [manifest(), manifest().replace(b'"seed": 0', b'"seed": ' + deep)],
             "tokenizer_json": [tokenizer_json(), b'{"model": {"type": "BPE", "vocab": {"a": ' + deep + b'}}}'],
             "image": pics, "onnx_external_data": onnx, "http_request": http()}
    for target, items in seeds.items():
        d = root / target
        d.mkdir(parents=True, exist_ok=True)
        for i, data in enumerate(items):
            (d / f"seed_{i}").write_bytes(data)
    print("[fuzz] seeds: " + ", ".join(f"{k} {len(v)}" for k, v in seeds.items()))


if __name__ == "__main__":
    main(sys.argv[1])
