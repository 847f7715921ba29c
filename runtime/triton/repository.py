"""Write a Triton model repository for a bundle (docs/triton.md).

    REPO/vlfront/config.pbtxt      python backend, KIND_CPU x instances, dynamic_batching
    REPO/vlfront/1/model.py        thin: imports vlfront.runtime.triton.model

and, with layout="ensemble", the GPU form (unverified here: no GPU, and the wheel's Triton has
no ONNX Runtime or TensorRT backend):

    REPO/vlfront_preprocess/       python, KIND_CPU: request JSON -> input_ids, pixel_values, masks
    REPO/vlfront_patch_embed/      onnxruntime_onnx or tensorrt_plan, KIND_GPU
    REPO/vlfront_fusion/           onnxruntime_onnx or tensorrt_plan, KIND_GPU
    REPO/vlfront_ensemble/         platform "ensemble" wiring the three

The bundle is referenced by its absolute path (the `bundle` parameter) and verified at model load
by `Runtime.load`, like any runtime; `copy_bundle=True` copies it into REPO/vlfront/bundle first.
"""

from __future__ import annotations

import dataclasses
import os
import pathlib
import shutil

from vlfront.errors import VlfrontError
from vlfront.runtime.bundle import Bundle
from vlfront.runtime.images import DECODE_MODES

# `request`: one SPEC request as JSON per element; `images` (optional): the encoded files that its image
# items {"type": "image", "image_index": j} name, one row per element (runtime/triton/request.py).
INPUTS = [("request", "TYPE_STRING", [1]), ("images", "TYPE_STRING", [-1], True)]
TYPES = {"float32": "TYPE_FP32", "float16": "TYPE_FP16", "int64": "TYPE_INT64", "uint8": "TYPE_UINT8"}

MODEL_PY = '''"""Triton python-backend model written by `vlfront triton`; the logic is vlfront.runtime.triton.model."""

import json
import os
import site


class TritonPythonModel:
    def initialize(self, args):
        params = json.loads(args["model_config"]).get("parameters", {})
        site_dir = params.get("python_site", {}).get("string_value", "")
        if site_dir and os.path.isdir(site_dir):  # the environment that wrote this repository (has vlfront)
            site.addsitedir(site_dir)
        from {module} import {cls}

        self.impl = {cls}(args)

    def execute(self, requests):
        return self.impl.execute(requests)

    def finalize(self):
        self.impl.finalize()
'''


class TritonRepositoryError(VlfrontError, ValueError):
    """Options that cannot make a repository (bad counts, unknown precision/layout, existing --out)."""


@dataclasses.dataclass
class RepositoryOptions:
    """What `vlfront triton` writes. See docs/triton.md for each field."""

    precision: str = "fp32"
    instances: int = 1
    max_batch: int = 8
    max_queue_delay_us: int = 5000
    cache: str | None = None
    output_dtype: str = "float32"
    backend: str = "auto"
    threads: int = 0
    decode: str = "exact"  # or "fast" / "fastest" (docs/images.md); part of every image key
    layout: str = "single"  # or "ensemble" (also writes the GPU form)
    gpu_backend: str = "onnxruntime"  # ensemble graphs: "onnxruntime" (onnxruntime_onnx) or "tensorrt" (plans)
    name: str = "vlfront"
    copy_bundle: bool = False
    python_site: str | None = None  # default: this Python's site-packages

    def check(self) -> None:
        if self.instances < 1 or self.max_batch < 1 or self.max_queue_delay_us < 0:
            raise TritonRepositoryError(f"instances={self.instances} and max_batch={self.max_batch} must be >= 1, "
                                        f"max_queue_delay_us={self.max_queue_delay_us} >= 0")
        if self.precision not in ("fp32", "fp16", "int8"):
            raise TritonRepositoryError(f"precision={self.precision!r}: choose fp32, fp16 or int8")
        if self.output_dtype not in ("float32", "float16"):
            raise TritonRepositoryError(f"output_dtype={self.output_dtype!r}: choose float32 or float16")
        if self.layout not in ("single", "ensemble") or self.gpu_backend not in ("onnxruntime", "tensorrt"):
            raise TritonRepositoryError(f"layout={self.layout!r} (single | ensemble), "
                                        f"gpu_backend={self.gpu_backend!r} (onnxruntime | tensorrt)")
        if self.decode not in DECODE_MODES:
            raise TritonRepositoryError(f"decode={self.decode!r}: choose one of {', '.join(DECODE_MODES)}")
        if self.cache is not None and not self.cache.startswith(("redis://", "rediss://")):
            raise TritonRepositoryError(f"cache={self.cache!r}: give redis://host:port/db")


def write_repository(bundle, out, options: RepositoryOptions | None = None, *, force: bool = False) -> pathlib.Path:
    """Write the model repository for `bundle` under `out`; returns `out`.

    Raises:
        BundleError: the bundle is missing or invalid (or lacks the precision).
        TritonRepositoryError: bad options, or `out` holds something other than a repository we wrote.
    """
    from vlfront.runtime.triton.services import site_packages

    opts = options or RepositoryOptions()
    opts.check()
    b = Bundle.open(pathlib.Path(bundle))
    if opts.precision not in b.manifest["graphs"].get("patch_embed", {}):
        from vlfront.errors import BundleError

        raise BundleError(f"{b.root}: no {opts.precision} variant; rebuild with calibration or pick fp32")
    out = pathlib.Path(out)
    if out.exists() and any(out.iterdir()) and not force:
        raise TritonRepositoryError(f"{out} exists and is not empty; pass --force to overwrite it")
    model_dir = out / opts.name
    bundle_path = pathlib.Path(b.root).resolve()
    if opts.copy_bundle:
        dest = model_dir / "bundle"
        shutil.rmtree(dest, ignore_errors=True)
        shutil.copytree(bundle_path, dest)
        bundle_path = dest.resolve()
    site_dir = opts.python_site if opts.python_site is not None else site_packages()
    cfg = b.config
    params = {"bundle": str(bundle_path), "precision": opts.precision, "backend": opts.backend,
              "output_dtype": opts.output_dtype, "threads": str(opts.threads), "cache": opts.cache or "",
              "decode": opts.decode,
              "python_site": site_dir}
    outputs = _outputs(cfg, opts.output_dtype, batched=True)
    _write_model(model_dir, _config(opts.name, "python", opts.max_batch, INPUTS,
                                    outputs, params, "KIND_CPU", opts.instances,
                                    dynamic=opts.max_queue_delay_us), "vlfront.runtime.triton.model.VlfrontModel")
    if opts.layout == "ensemble":
        from vlfront.runtime.triton.ensemble import write_ensemble

        write_ensemble(b, out, opts, params)
    return out


def _outputs(cfg, output_dtype: str, batched: bool) -> list:
    lead = [] if batched else [1]
    return [("inputs_embeds", TYPES[output_dtype], lead + [cfg.max_seq_len, cfg.hidden_size]),
            ("input_ids", "TYPE_INT64", lead + [cfg.max_seq_len]),
            ("attention_mask", "TYPE_INT64", lead + [cfg.max_seq_len]),
            ("image_attention_mask", "TYPE_INT64", lead + [cfg.max_seq_len]),
            ("dropped_tokens", "TYPE_INT64", [1])]


def _tensors(kind: str, tensors: list) -> str:
    """(name, type, dims) or (name, type, dims, optional) -> a config.pbtxt input/output list."""
    def one(n, t, d, optional=False):
        return f'  {{ name: "{n}" data_type: {t} dims: [ {", ".join(map(str, d))} ]{" optional: true" if optional else ""} }}'

    body = ",\n".join(one(*tensor) for tensor in tensors)
    return f"{kind} [\n{body}\n]\n"


def _config(name, backend, max_batch, inputs, outputs, params, kind, count, dynamic=None, platform=None,
            default_model_filename=None, extra="") -> str:
    lines = [f'name: "{name}"', f'platform: "{platform}"' if platform else f'backend: "{backend}"',
             f"max_batch_size: {max_batch}"]
    if default_model_filename:
        lines.append(f'default_model_filename: "{default_model_filename}"')
    text = "\n".join(lines) + "\n" + _tensors("input", inputs) + _tensors("output", outputs)
    if dynamic is not None:
        text += f"dynamic_batching {{ max_queue_delay_microseconds: {dynamic} }}\n"
    if kind:
        text += f"instance_group [ {{ kind: {kind} count: {count} }} ]\n"
    for k, v in (params or {}).items():
        text += f'parameters {{ key: "{k}" value: {{ string_value: "{_escape(v)}" }} }}\n'
    return text + extra


def _escape(value: str) -> str:
    return str(value).replace("\\", "\\\\").replace('"', '\\"')


def _write_model(model_dir: pathlib.Path, config: str, cls: str | None) -> None:
    (model_dir / "1").mkdir(parents=True, exist_ok=True)
    (model_dir / "config.pbtxt").write_text(config)
    if cls:
        module, name = cls.rsplit(".", 1)
        (model_dir / "1" / "model.py").write_text(MODEL_PY.replace("{module}", module).replace("{cls}", name))


def link_or_copy(src: pathlib.Path, dest: pathlib.Path) -> None:
    dest.unlink(missing_ok=True)
    try:
        os.link(src, dest)
    except OSError:
        shutil.copyfile(src, dest)


def validate_repository(repo) -> dict[str, object]:
    """Parse every config.pbtxt with Triton's ModelConfig protobuf (tritonclient); returns name -> message.

    Raises:
        TritonRepositoryError: a config that does not parse, or whose name differs from its folder.
    """
    from google.protobuf import text_format
    from tritonclient.grpc import model_config_pb2

    found = {}
    for path in sorted(pathlib.Path(repo).glob("*/config.pbtxt")):
        msg = model_config_pb2.ModelConfig()
        try:
            text_format.Parse(path.read_text(), msg)
        except text_format.ParseError as e:
            raise TritonRepositoryError(f"{path}: not a valid Triton ModelConfig ({e})") from None
        if msg.name != path.parent.name:
            raise TritonRepositoryError(f"{path}: name {msg.name!r} differs from its folder {path.parent.name!r}")
        found[msg.name] = msg
    return found
