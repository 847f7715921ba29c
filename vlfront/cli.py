"""The `vlfront` command. It only parses arguments and calls the public API."""

from __future__ import annotations

import argparse
import sys

from vlfront.errors import VlfrontError


def _export(a) -> None:
    from vlfront.export import export_bundle

    export_bundle(a.preset, a.out, weights=a.weights, tokenizer=a.tokenizer, ranks=a.ranks, seed=a.seed,
                  calibrate=not a.no_calibrate, force=a.force)


def _embed(a) -> None:
    from vlfront.runtime.cli import embed_command

    embed_command(a)


def _bench(a) -> None:
    from vlfront.runtime.bench import bench_command

    bench_command(a)


def _calibrate(a) -> None:
    from vlfront.calibration import calibrate_bundle

    gate = {k: v for k, v in (("mean_cosine", a.mean_cosine), ("min_cosine", a.min_cosine)) if v is not None}
    calibrate_bundle(a.bundle, data=a.data, method=a.method, **gate)


def _engines(a) -> None:
    from vlfront.calibration.engines import engines_command

    engines_command(a)


def _triton(a) -> None:
    from vlfront.runtime.triton.cli import triton_command

    triton_command(a)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="vlfront", description=__doc__)
    sub = p.add_subparsers(dest="command", required=True)

    e = sub.add_parser("export", help="build a validated bundle from the PyTorch reference")
    e.add_argument("--preset", default="default", help="default | tiny")
    e.add_argument("--out", required=True, help="bundle directory to write")
    e.add_argument("--weights", help="SPEC-named weights.safetensors (default: random weights from --seed)")
    e.add_argument("--tokenizer", help="your own tokenizer.json (default: built from the Qwen ranks)")
    e.add_argument("--ranks", help="qwen.tiktoken (default: build/cache/qwen.tiktoken, fetched if missing)")
    e.add_argument("--seed", type=int, default=0)
    e.add_argument("--no-calibrate", action="store_true", help="skip the INT8/FP16 variants")
    e.add_argument("--force", action="store_true", help="rebuild even if an up-to-date bundle exists")
    e.set_defaults(func=_export)

    m = sub.add_parser("embed", help="embed one request and print shapes and timings")
    m.add_argument("--bundle", required=True)
    m.add_argument("--image", action="append", default=[], help="image path (repeatable)")
    m.add_argument("--text", default="")
    m.add_argument("--out", help="write inputs_embeds to FILE.npy")
    m.add_argument("--precision", default="fp32", choices=["fp32", "fp16", "int8"])
    m.add_argument("--backend", default="auto")
    m.set_defaults(func=_embed)

    b = sub.add_parser("bench", help="benchmark the runtime against a hand-written PyTorch baseline")
    b.add_argument("--bundle", required=True)
    b.add_argument("--out", default="build/bench", help="directory for the CSV/Parquet table and PNG plot")
    b.add_argument("--precision", default="fp32", help="comma-separated: fp32,int8,fp16")
    b.add_argument("--iterations", type=int, default=30)
    b.add_argument("--decode", default="exact,fast,fastest",
                   help="comma-separated decode modes for the camera-photo runs: exact,fast,fastest (docs/images.md)")
    b.add_argument("--photos", default="0.3,1,3,12", help="camera-photo sizes in MP ('' skips those runs)")
    b.set_defaults(func=_bench)

    c = sub.add_parser("calibrate", help="(re)make the INT8/FP16 variants of a bundle behind the accuracy gate")
    c.add_argument("--bundle", required=True)
    c.add_argument("--data", help="folder of images, or a CSV/Parquet/JSONL manifest with an image column")
    c.add_argument("--method", default="minmax", choices=["minmax", "entropy", "percentile"])
    c.add_argument("--mean-cosine", type=float, default=None, help="gate: per-token cosine mean (default 0.9995)")
    c.add_argument("--min-cosine", type=float, default=None, help="gate: per-token cosine min (default 0.999)")
    c.set_defaults(func=_calibrate)

    g = sub.add_parser("engines", help="build TensorRT engines (needs tensorrt and a CUDA GPU)")
    g.add_argument("--bundle", required=True)
    g.add_argument("--min-batch", type=int, default=1)
    g.add_argument("--opt-batch", type=int, default=8)
    g.add_argument("--max-batch", type=int, default=32)
    g.set_defaults(func=_engines)

    from vlfront.runtime.triton.cli import add_triton_parser

    add_triton_parser(sub, _triton)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        args.func(args)
    except VlfrontError as e:
        print(f"vlfront {args.command}: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
