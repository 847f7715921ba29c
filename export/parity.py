"""Parity of the ONNX graphs (ONNX Runtime) against the PyTorch reference.

Figures per output: max_abs, max_rel (max |onnx - ref| divided by max |ref|,
i.e. relative to the output's scale, which stays meaningful where single
elements are near zero), and the minimum and mean per-token cosine.
"""

from __future__ import annotations

import pathlib

import numpy as np
import torch

from vlfront.config import IMAGE_PAD_ID, IM_END_ID, IM_START_ID, PAD_ID, VISION_END_ID, VISION_START_ID, Config
from vlfront.errors import ExportError
from vlfront.export.reference import FrontEnd, reference_fusion, reference_visual_tokens

FP32_MAX_REL = 1e-4


def compare(actual: np.ndarray, expected: np.ndarray) -> dict[str, float]:
    """max_abs, max_rel, cosine_min, cosine_mean over the last axis, plus a NaN/Inf check."""
    a = np.asarray(actual, np.float64).reshape(-1, actual.shape[-1])
    e = np.asarray(expected, np.float64).reshape(-1, expected.shape[-1])
    finite = bool(np.isfinite(a).all())
    diff = np.abs(a - e)
    scale = float(np.abs(e).max()) or 1.0
    dot = (a * e).sum(1)
    norms = np.linalg.norm(a, axis=1) * np.linalg.norm(e, axis=1)
    cos = np.where(norms > 0, dot / np.maximum(norms, 1e-300), 1.0)
    return {
        "max_abs": float(diff.max()) if diff.size else 0.0,
        "max_rel": float(diff.max() / scale) if diff.size else 0.0,
        "cosine_min": float(cos.min()) if cos.size else 1.0,
        "cosine_mean": float(cos.mean()) if cos.size else 1.0,
        "finite": finite,
    }


def sample_photos(config: Config, limit: int = 4) -> np.ndarray:
    """Real photos shipped with scikit-image, preprocessed per SPEC 1.4: uint8 [n,H,W,3]."""
    import skimage

    from vlfront.calibration.data import pixels

    folder = pathlib.Path(skimage.__file__).parent / "data"
    names = ["astronaut.png", "chelsea.png", "coffee.png", "rocket.jpg"][:limit]
    return pixels([folder / name for name in names], config.image_size)


def sample_input_ids(config: Config, images_per_request: list[int], seed: int = 0) -> np.ndarray:
    """A batch laid out like the processor does: text, images (start + pads + end), right padding."""
    rng = np.random.default_rng(seed)
    rows = []
    for n in images_per_request:
        ids = [IM_START_ID, *rng.integers(0, 151643, 5)]
        for _ in range(n):
            ids += [VISION_START_ID] + [IMAGE_PAD_ID] * config.tokens_per_image + [VISION_END_ID]
            ids += list(rng.integers(0, 151643, 3))
        ids += [IM_END_ID]
        ids += [PAD_ID] * (config.max_seq_len - len(ids))
        rows.append(ids[: config.max_seq_len])
    return np.asarray(rows, np.int64)


def run_parity(front: FrontEnd, bundle_dir: pathlib.Path) -> dict[str, dict[str, dict]]:
    """Compare ORT against the reference on random and real inputs; raise when fp32 parity fails.

    Raises:
        ExportError: naming the graph, output, case and figure that exceeds 1e-4 relative.
    """
    import onnxruntime as ort

    cfg = front.config
    opts = ort.SessionOptions()
    opts.log_severity_level = 3
    sess = {g: ort.InferenceSession(str(bundle_dir / f"{g}.onnx"), opts, providers=["CPUExecutionProvider"])
            for g in ("patch_embed", "fusion")}
    rng = np.random.default_rng(1)
    random_px = rng.integers(0, 256, (3, cfg.image_size, cfg.image_size, 3), dtype=np.uint8)
    cases = {"random": random_px, "photos": sample_photos(cfg)}
    results: dict[str, dict[str, dict]] = {"patch_embed": {}, "fusion": {}}
    vis_ref = {}
    with torch.no_grad():
        for case, px in cases.items():
            ref = reference_visual_tokens(front, torch.from_numpy(px)).numpy()
            got = sess["patch_embed"].run(None, {"pixel_values": px})[0]
            results["patch_embed"][f"visual_tokens/{case}"] = compare(got, ref)
            vis_ref[case] = ref
        # Requests with 0, 1 and 3 images (4 images in all), and a text-only batch.
        ids = sample_input_ids(cfg, [0, 1, 3])
        vis = vis_ref["photos"]
        fusion_cases = {"images_0_1_3": (ids, vis), "text_only": (sample_input_ids(cfg, [0, 0], seed=2), vis[:0])}
        for case, (i, v) in fusion_cases.items():
            ref = reference_fusion(front, torch.from_numpy(i), torch.from_numpy(v)).numpy()
            got = sess["fusion"].run(None, {"input_ids": i, "visual_tokens": v})[0]
            results["fusion"][f"inputs_embeds/{case}"] = compare(got, ref)
    for graph, outs in results.items():
        for key, fig in outs.items():
            if not fig["finite"] or fig["max_rel"] > FP32_MAX_REL:
                raise ExportError(
                    f"parity failed for graph {graph}, output {key}: max_rel={fig['max_rel']:.3g} "
                    f"(limit {FP32_MAX_REL:g}), max_abs={fig['max_abs']:.3g}, finite={fig['finite']}"
                )
    return results
