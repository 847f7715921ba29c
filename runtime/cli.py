"""`vlfront embed`: one request through the runtime, with shapes, dropped tokens and per-stage timings."""

from __future__ import annotations

import sys

import numpy as np

from vlfront.errors import VlfrontError


def embed_command(args) -> None:
    from vlfront.runtime import Runtime

    content = [{"type": "image", "image": path} for path in args.image]
    if args.text:
        content.append({"type": "text", "text": args.text})
    if not content:
        raise VlfrontError("nothing to embed: give --image PATH and/or --text TEXT")
    request = [{"role": "user", "content": content}]
    with Runtime.load(args.bundle, backend=args.backend, precision=args.precision) as rt:
        out = rt.embed([request])
    real = int(out.attention_mask.sum())
    lines = [
        f"backend      {rt.runner.name} ({args.precision})",
        f"inputs_embeds {list(out.inputs_embeds.shape)} {out.inputs_embeds.dtype}",
        f"input_ids     {list(out.input_ids.shape)}  real tokens {real}, image tokens "
        f"{int(out.image_attention_mask.sum())}, dropped {out.dropped_tokens[0]}",
        f"pixel_values  {list(out.pixel_values.shape)} {out.pixel_values.dtype}",
        "timings       " + ", ".join(f"{k} {v * 1000:.2f} ms" for k, v in out.timings.items()),
    ]
    if args.out:
        np.save(args.out, out.inputs_embeds)
        lines.append(f"saved         {args.out}")
    print("\n".join(lines), file=sys.stdout)
