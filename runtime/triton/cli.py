"""`vlfront triton`: parse arguments, call `write_repository` (docs/triton.md)."""

from __future__ import annotations


def add_triton_parser(sub, func) -> None:
    t = sub.add_parser("triton", help="write a Triton Inference Server model repository for a bundle")
    t.add_argument("--bundle", required=True, help="bundle directory (referenced by absolute path, verified at load)")
    t.add_argument("--out", required=True, help="model repository to write")
    t.add_argument("--precision", default="fp32", choices=["fp32", "fp16", "int8"])
    t.add_argument("--instances", type=int, default=1, help="KIND_CPU model instances (one process each)")
    t.add_argument("--max-batch", type=int, default=8, help="max_batch_size of Triton's dynamic batcher")
    t.add_argument("--max-queue-delay-us", type=int, default=5000, help="how long a batch may wait to fill")
    t.add_argument("--cache", help="redis://host:port/db: visual-token cache shared by every replica")
    t.add_argument("--output-dtype", default="float32", choices=["float32", "float16"], help="inputs_embeds type")
    t.add_argument("--threads", type=int, default=0, help="ONNX Runtime threads per instance (0: all cores)")
    t.add_argument("--backend", default="auto", choices=["auto", "onnxruntime", "tensorrt"])
    t.add_argument("--decode", default="exact", choices=["exact", "fast", "fastest"],
                   help="image decoding: exact (SPEC 1.4), fast or fastest (DCT-scaled JPEG, docs/images.md)")
    t.add_argument("--layout", default="single", choices=["single", "ensemble"],
                   help="ensemble: also write the GPU ensemble form (unverified here)")
    t.add_argument("--gpu-backend", default="onnxruntime", choices=["onnxruntime", "tensorrt"],
                   help="what the ensemble's patch_embed and fusion models run on")
    t.add_argument("--name", default="vlfront", help="model name")
    t.add_argument("--copy-bundle", action="store_true", help="copy the bundle into the repository")
    t.add_argument("--force", action="store_true", help="write into a non-empty --out")
    t.set_defaults(func=func)


def triton_command(a) -> None:
    from vlfront.runtime.triton.repository import RepositoryOptions, write_repository

    opts = RepositoryOptions(precision=a.precision, instances=a.instances, max_batch=a.max_batch,
                             max_queue_delay_us=a.max_queue_delay_us, cache=a.cache, output_dtype=a.output_dtype,
                             backend=a.backend, threads=a.threads, decode=a.decode, layout=a.layout,
                             gpu_backend=a.gpu_backend,
                             name=a.name, copy_bundle=a.copy_bundle)
    out = write_repository(a.bundle, a.out, opts, force=a.force)
    models = sorted(p.parent.name for p in out.glob("*/config.pbtxt"))
    print(f"wrote {out}: {', '.join(models)}")
    print(f"run:  tritonserver --model-repository {out.resolve()}   (docs/triton.md)")
