"""The accuracy gate: INT8/FP16 against fp32 on held-out images, per graph and end to end.

Figures, over the last axis (one vector per token), computed in float64:

* `cosine_min`, `cosine_mean`: cosine similarity of each token's vector with
  the fp32 one (both zero counts as 1, one zero as 0);
* `rel_l2`: ||actual - fp32|| / ||fp32|| over the whole tensor;
* `max_abs`: the largest elementwise difference; `finite`: no NaN/Inf.

A precision ships only if every row of its figures passes: per graph
(`patch_embed` on the held-out pixels; `fusion` on the fp32 visual tokens and
the runtime's input_ids), and end to end through `vlfront.runtime.Runtime`
(`inputs_embeds` on the image-pad tokens, and on every attended token).
Thresholds apply to the cosines (mean and min); rel_l2 and max_abs are
reported. A NaN or Inf fails whatever the cosines say.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from vlfront.errors import CalibrationError

E2E_BATCH = 4
PATCH_BATCH = 8


@dataclass(frozen=True)
class Thresholds:
    # min 0.999 refuses what an int16-saturating kernel does to 8-bit weights (cosine min 0.997 on
    # AVX2-only CPUs, docs/calibration.md), so the load-time probe notices that case on any server.
    mean_cosine: float = 0.9995
    min_cosine: float = 0.999

    def validate(self) -> "Thresholds":
        for name in ("mean_cosine", "min_cosine"):
            value = getattr(self, name)
            if not isinstance(value, (int, float)) or not -1.0 <= value <= 1.0 or value != value:
                raise CalibrationError(f"{name}={value!r}: a cosine threshold must lie in [-1, 1]")
        return self

    def to_dict(self) -> dict:
        return {"mean_cosine": float(self.mean_cosine), "min_cosine": float(self.min_cosine)}


def figures(actual: np.ndarray, expected: np.ndarray) -> dict:
    """cosine_min, cosine_mean, rel_l2, max_abs and finite of `actual` against `expected` (same shape).

    One definition (vlfront.runtime.probe.figures) serves the gate here and the acceptance probe at load.
    """
    from vlfront.runtime.probe import figures as probe_figures

    if actual.shape != expected.shape:
        raise CalibrationError(f"shape {list(actual.shape)} differs from the fp32 shape {list(expected.shape)}")
    return probe_figures(actual, expected)


def failures(fig: dict, thresholds: Thresholds) -> list[str]:
    """Which figure failed and by how much; empty when the figures pass."""
    out = []
    if not fig["finite"]:
        out.append("NaN/Inf in the output")
    for name, limit in (("cosine_mean", thresholds.mean_cosine), ("cosine_min", thresholds.min_cosine)):
        if fig[name] < limit:
            out.append(f"{name} {fig[name]:.6f} < {limit:g} (short by {limit - fig[name]:.6f})")
    return out


def row(precision: str, scope: str, output: str, fig: dict, thresholds: Thresholds) -> dict:
    fails = failures(fig, thresholds)
    return {"precision": precision, "scope": scope, "output": output, **fig,
            "verdict": "pass" if not fails else "fail", "failures": "; ".join(fails)}


def requests_for(images) -> list:
    return [[{"role": "user", "content": [{"type": "image", "image": str(im.path)},
                                          {"type": "text", "text": im.text}]}] for im in images]


def _open_runtime(bundle, precision: str):
    from vlfront.runtime.backends.base import select_backend
    from vlfront.runtime.runtime import Runtime
    from vlfront.runtime.tokenizer import Tokenizer

    tokenizer = Tokenizer.from_file(bundle.path(bundle.manifest["tokenizer"]["file"]))
    runner = select_backend(bundle, "onnxruntime", precision).load()
    return Runtime(bundle, runner, tokenizer)


def embed_all(rt, requests: list, images=None) -> list:
    """Runtime outputs for `requests`, E2E_BATCH at a time. A refused request names its image."""
    from vlfront.errors import RequestError

    outs = []
    for start in range(0, len(requests), E2E_BATCH):
        try:
            outs.append(rt.embed(requests[start:start + E2E_BATCH]))
        except RequestError as e:
            index = start + (e.index or 0)
            name = images[index].path if images is not None and index < len(images) else f"request {index}"
            raise CalibrationError(f"held-out image {name}: the runtime refuses it ({e}); remove it from the set") \
                from None
    return outs


def patch_embed_tokens(runner, pixels: np.ndarray) -> np.ndarray:
    parts = [runner.infer("patch_embed", {"pixel_values": pixels[i:i + PATCH_BATCH]})["visual_tokens"]
             for i in range(0, len(pixels), PATCH_BATCH)]
    return np.concatenate(parts)


def evaluate(bundle, images, pixels: np.ndarray, precisions, thresholds: Thresholds) -> list[dict]:
    """Figures of each precision against fp32 on the held-out `images` (and their `pixels`). Returns rows.

    `bundle` is a `vlfront.runtime.bundle.Bundle` whose manifest lists the candidate variants.
    """
    requests = requests_for(images)
    rt32 = _open_runtime(bundle, "fp32")
    try:
        vis32 = patch_embed_tokens(rt32.runner, pixels)
        ref = embed_all(rt32, requests, images)
        fusion_feeds = [{"input_ids": out.input_ids, "visual_tokens": patch_embed_tokens(rt32.runner, out.pixel_values)}
                        for out in ref]
        fusion32 = [rt32.runner.infer("fusion", f)["inputs_embeds"] for f in fusion_feeds]
    finally:
        rt32.close()
    rows = []
    for precision in precisions:
        rt = _open_runtime(bundle, precision)
        try:
            rows.append(row(precision, "patch_embed", "visual_tokens",
                             figures(patch_embed_tokens(rt.runner, pixels), vis32), thresholds))
            got = np.concatenate([rt.runner.infer("fusion", f)["inputs_embeds"] for f in fusion_feeds])
            rows.append(row(precision, "fusion", "inputs_embeds", figures(got, np.concatenate(fusion32)), thresholds))
            outs = embed_all(rt, requests, images)
        finally:
            rt.close()
        for label, mask in (("inputs_embeds[image tokens]", "image_attention_mask"),
                            ("inputs_embeds[all tokens]", "attention_mask")):
            sel = [getattr(r, mask).astype(bool) for r in ref]
            got = np.concatenate([o.inputs_embeds[m] for o, m in zip(outs, sel)])
            want = np.concatenate([r.inputs_embeds[m] for r, m in zip(ref, sel)])
            rows.append(row(precision, "end_to_end", label, figures(got, want), thresholds))
    return rows


def verdicts(rows: list[dict]) -> dict[str, list[str]]:
    """{precision: [failure, ...]} (an empty list: the precision ships)."""
    out: dict[str, list[str]] = {}
    for row in rows:
        fails = out.setdefault(row["precision"], [])
        if row["verdict"] != "pass":
            fails.append(f"{row['scope']} {row['output']}: {row['failures']}")
    return out
