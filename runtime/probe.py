"""The acceptance probe: a calibrated variant is checked on the machine that serves it, at load.

The gate figures in a manifest were measured on the machine that calibrated the
bundle; INT8 and FP16 kernels differ between CPUs and GPUs. So calibration
ships a small probe (`probe.safetensors`, listed and hashed in `files`,
described in `manifest["calibration"]["probe"]`, docs/bundle.md):

* `patch_embed.pixel_values` uint8 [n, S, S, 3]: n held-out images (SPEC 1.4);
* `patch_embed.visual_tokens` float32 [n, T, D]: their fp32 visual tokens;
* `fusion.input_ids` int64 [1, L]: one request (the first probe image and its prompt);
* `fusion.attention_mask` int64 [1, L];
* `fusion.inputs_embeds` float32 [A, D]: fp32 inputs_embeds of its A attended tokens.
  The fusion graph is fed `fusion.input_ids` and `patch_embed.visual_tokens[:1]`.

`verify` runs both graphs on the runner that will serve (backend, precision,
device; int8's fusion graph is the fp32 one and is not re-run) and applies the
gate's rule to each: per-token cosine mean >=
`thresholds.mean_cosine` and min >= `thresholds.min_cosine`, finite. Below it,
load fails with a BundleError naming the figure, the gate, the machine and the
remedy. The C++ runtime (runtime/cpp/src/probe.cc) runs the same probe with the
same rule and the same message.
"""

from __future__ import annotations

import logging
import os
import platform

import numpy as np

from vlfront.errors import BundleError

FILE = "probe.safetensors"
MAX_IMAGES = 4
# CPU features that decide how int8 products are computed (x86 flags / ARM64 Features in /proc/cpuinfo).
CPU_FEATURES = ("avx2", "avx512f", "avx512bw", "avx512_vnni", "avx_vnni", "avx512_bf16", "avx512_fp16",
                "amx_int8", "amx_bf16", "asimddp", "i8mm", "sve")
CHECKS = (("patch_embed", "visual_tokens"), ("fusion", "inputs_embeds"))
log = logging.getLogger("vlfront.probe")


# --- figures (the gate's, one definition for calibration and load) -------------
def figures(actual: np.ndarray, expected: np.ndarray) -> dict:
    """cosine_min, cosine_mean (per vector of the last axis), rel_l2, max_abs, finite, tokens; float64.

    Both vectors zero count as cosine 1, one zero as 0. A NaN/Inf is reported (finite False) and zeroed.
    """
    if actual.shape != expected.shape:
        raise BundleError(f"shape {list(actual.shape)} differs from the fp32 shape {list(expected.shape)}")
    dim = actual.shape[-1] if actual.ndim else 1
    a = np.array(actual, np.float64).reshape(-1, dim)  # a copy: it becomes the difference below
    e = np.asarray(expected, np.float64).reshape(-1, dim)
    finite = bool(np.isfinite(a).all())
    if not finite:
        np.nan_to_num(a, copy=False, nan=0.0, posinf=0.0, neginf=0.0)
    # einsum keeps this in a few passes over memory: it runs at every load (the probe), not only at calibration
    dot, na, ne = np.einsum("ij,ij->i", a, e), np.einsum("ij,ij->i", a, a), np.einsum("ij,ij->i", e, e)
    na, ne = np.sqrt(na), np.sqrt(ne)
    both = (na > 0) & (ne > 0)
    cos = np.where(both, dot / np.where(both, na * ne, 1.0), np.where((na == 0) & (ne == 0), 1.0, 0.0))
    ref = float(np.sqrt(ne @ ne))
    np.subtract(a, e, out=a)
    err = float(np.sqrt(np.einsum("ij,ij->", a, a)))
    return {
        "cosine_min": float(cos.min()) if cos.size else 1.0,
        "cosine_mean": float(cos.mean()) if cos.size else 1.0,
        "rel_l2": err / ref if ref > 0 else float(err > 0),
        "max_abs": float(np.abs(a).max()) if a.size else 0.0,
        "finite": finite,
        "tokens": int(cos.size),
    }


# --- the machine ---------------------------------------------------------------
def cpu_info() -> dict:
    """{"arch", "cpu" (model name), "features" (the CPU_FEATURES present)} from /proc/cpuinfo where it exists."""
    model, flags = "", set()
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as f:
            for line in f:
                key, _, value = line.partition(":")
                key = key.strip().lower()
                if key in ("model name", "hardware") and not model:
                    model = value.strip()
                elif key in ("flags", "features") and not flags:
                    flags = set(value.split())
    except OSError:
        pass
    return {"arch": platform.machine(), "cpu": model or platform.processor() or "unknown CPU",
            "features": [f for f in CPU_FEATURES if f in flags]}


def describe_cpu(info: dict) -> str:
    """"CPU 'model' (x86_64: avx2 avx512f ...)": the same text as the C++ runtime's."""
    features = " ".join(info.get("features") or []) or "none of " + "/".join(CPU_FEATURES[:5])
    return f"CPU '{info.get('cpu')}' ({info.get('arch')}: {features})"


def describe_machine(runner) -> str:
    """The hardware a runner computes on: a GPU's name where it has one, else the CPU."""
    gpu = getattr(runner, "device_name", None)
    if callable(gpu):
        gpu = gpu()
    if gpu:
        return f"GPU '{gpu}'"
    if getattr(runner, "name", "") == "tensorrt":
        try:
            from vlfront.runtime.backends.tensorrt import environment

            return f"GPU '{environment()['gpu']}' (TensorRT)"
        except Exception:  # naming the GPU must never hide the probe's verdict
            return "GPU (TensorRT)"
    sessions = getattr(runner, "sessions", None) or {}
    if any("CUDAExecutionProvider" in s.get_providers()[:1] for s in sessions.values()):
        return "GPU (onnxruntime CUDAExecutionProvider)"
    return describe_cpu(cpu_info())


# --- making the probe (calibration) --------------------------------------------
def make(rt32, images, pixels: np.ndarray) -> dict[str, np.ndarray]:
    """The probe tensors from an fp32 Runtime: the first MAX_IMAGES held-out images and one request."""
    from vlfront.calibration.gate import requests_for

    n = min(MAX_IMAGES, len(pixels))
    px = np.ascontiguousarray(pixels[:n])
    vt = rt32.runner.infer("patch_embed", {"pixel_values": px})["visual_tokens"].astype(np.float32)
    out = rt32.embed(requests_for(images[:1]))
    ids = np.ascontiguousarray(out.input_ids[:1].astype(np.int64))
    mask = np.ascontiguousarray(out.attention_mask[:1].astype(np.int64))
    embeds = rt32.runner.infer("fusion", {"input_ids": ids, "visual_tokens": vt[:1]})["inputs_embeds"]
    return {"patch_embed.pixel_values": px, "patch_embed.visual_tokens": np.ascontiguousarray(vt),
            "fusion.input_ids": ids, "fusion.attention_mask": mask,
            "fusion.inputs_embeds": np.ascontiguousarray(embeds[0][mask[0].astype(bool)].astype(np.float32))}


def save(tensors: dict[str, np.ndarray], path: str | os.PathLike) -> None:
    from safetensors.numpy import save_file

    save_file(tensors, os.fspath(path))


# --- checking it (load) --------------------------------------------------------
def _load(bundle, rel: str) -> dict[str, np.ndarray]:
    """The probe's tensors, with names, dtypes and shapes checked against the bundle's config."""
    from safetensors import SafetensorError
    from safetensors.numpy import load_file

    path = bundle.path(rel)  # size + sha256 against the manifest first
    try:
        t = load_file(os.fspath(path))
    except (SafetensorError, OSError, ValueError) as e:
        raise BundleError(f"{bundle.root}: {rel} is not a valid safetensors file ({e}); re-calibrate the bundle") \
            from None
    c = bundle.config
    want = {"patch_embed.pixel_values": ("uint8", [None, c.image_size, c.image_size, 3]),
            "patch_embed.visual_tokens": ("float32", [None, c.tokens_per_image, c.hidden_size]),
            "fusion.input_ids": ("int64", [1, c.max_seq_len]), "fusion.attention_mask": ("int64", [1, c.max_seq_len]),
            "fusion.inputs_embeds": ("float32", [None, c.hidden_size])}
    for name, (dtype, shape) in want.items():
        arr = t.get(name)
        if arr is None or arr.dtype.name != dtype or arr.ndim != len(shape) or any(
                w is not None and g != w for g, w in zip(arr.shape, shape)):
            got = "missing" if arr is None else f"{arr.dtype.name} {list(arr.shape)}"
            raise BundleError(f"{bundle.root}: {rel}: tensor {name} is {got}, expected {dtype} {shape}; "
                              "re-calibrate the bundle")
    n = t["patch_embed.pixel_values"].shape[0]
    attended = int(t["fusion.attention_mask"].astype(bool).sum())
    if n < 1 or t["patch_embed.visual_tokens"].shape[0] != n or t["fusion.inputs_embeds"].shape[0] != attended:
        raise BundleError(f"{bundle.root}: {rel}: inconsistent tensor sizes (images {n}, attended tokens {attended}); "
                          "re-calibrate the bundle")
    return t


def fusion_is_fp32(bundle, precision: str) -> bool:
    """int8 serves the fp32 fusion graph: nothing to probe there (fp32 itself is probed on engines, verify_engines)."""
    return precision != "fp32" and bundle.graph("fusion", precision)["file"] == bundle.graph("fusion", "fp32")["file"]


def measure(bundle, runner) -> dict[str, dict]:
    """Figures of `runner` on the bundle's probe: {"patch_embed/visual_tokens": {...}, "fusion/inputs_embeds": {...}}.

    The fusion row is left out where the precision serves the fp32 fusion graph (`fusion_is_fp32`).
    """
    spec = (bundle.manifest.get("calibration") or {}).get("probe") or {}
    t = _load(bundle, spec.get("file", FILE))
    vt = runner.infer("patch_embed", {"pixel_values": t["patch_embed.pixel_values"]})["visual_tokens"]
    ref_vt = t["patch_embed.visual_tokens"]
    out = {"patch_embed/visual_tokens": figures(vt, ref_vt)}
    if not fusion_is_fp32(bundle, runner.precision):
        emb = runner.infer("fusion", {"input_ids": t["fusion.input_ids"], "visual_tokens": ref_vt[:1]})["inputs_embeds"]
        mask = t["fusion.attention_mask"][0].astype(bool)
        out["fusion/inputs_embeds"] = figures(np.asarray(emb)[0][mask], t["fusion.inputs_embeds"])
    return out


def failures(fig: dict, thresholds: dict) -> list[str]:
    """The rule, in the words of the message: each failing figure against its gate."""
    out = [] if fig["finite"] else ["NaN/Inf in the output"]
    for name, key in (("cosine_min", "min_cosine"), ("cosine_mean", "mean_cosine")):
        if fig[name] < float(thresholds[key]):
            out.append(f"{name} {fig[name]:.6f} < gate {float(thresholds[key]):g}")
    return out


def verify(bundle, runner, precision: str) -> dict[str, dict]:
    """Run the probe on `runner` (loaded, serving `precision`) and apply the gate. Returns the figures.

    Raises:
        BundleError: no probe in the bundle, a tampered probe, or figures below the gate (names the figure,
            the gate, this machine, where the gate was measured, and the remedy).
    """
    calibration = bundle.manifest.get("calibration") or {}
    thresholds = calibration.get("thresholds")
    if not calibration.get("probe") or not isinstance(thresholds, dict):
        raise BundleError(f"{bundle.root}: the {precision} variant has no acceptance probe (calibration.probe): "
                          f"re-calibrate with `vlfront calibrate --bundle {bundle.root}`, or load with verify=False")
    for key in ("mean_cosine", "min_cosine"):
        value = thresholds.get(key)
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not -1.0 <= value <= 1.0:
            raise BundleError(f"{bundle.root}: manifest calibration.thresholds.{key} is {value!r}, not a cosine in "
                              "[-1, 1]; re-calibrate the bundle")
    figs = measure(bundle, runner)
    problems = [f"{key.replace('/', ' ')} {what}" for key, fig in figs.items() for what in failures(fig, thresholds)]
    if problems:
        where = calibration.get("machine") or {}
        key = next(k for k, f in figs.items() if failures(f, thresholds))
        raise BundleError(
            f"{bundle.root}: the {precision} variant fails its acceptance probe on this machine: "
            f"{'; '.join(problems)} (rel_l2 {figs[key]['rel_l2']:.3e}); backend {runner.name} on "
            f"{describe_machine(runner)}; the gate was measured on {describe_cpu(where)}. Serve fp32 "
            f"(precision='fp32'), or re-calibrate on this machine (`vlfront calibrate --bundle {bundle.root}`); "
            "verify=False (C option verify=0) skips this check")
    return figs


def skipped(bundle, precision: str) -> None:
    log.warning("%s: the %s variant is served without its acceptance probe (verify=False): its accuracy on this "
                "machine is not checked", bundle.root, precision)


def verify_engines(bundle_dir, runner_factory=None, say=None) -> dict[str, dict]:
    """The probe on the TensorRT engines of a bundle (`vlfront engines`, `make gpu-check`). Returns figures per precision.

    Every precision whose two graphs have usable engines is checked (fp32 too, against the same gate: TF32 and
    tactic choices differ by GPU). `runner_factory(bundle, precision)` returns a loaded runner (default: the
    TensorRT runner; tests pass a fake). Bundles without a probe (never calibrated) are skipped, saying so.

    Raises:
        BundleError: an engine below the gate (the message of `verify`).
    """
    from vlfront.runtime.bundle import Bundle

    say = say or (lambda text: log.warning("%s", text))
    bundle = Bundle.open(bundle_dir)
    if not (bundle.manifest.get("calibration") or {}).get("probe"):
        say(f"[probe] {bundle.root}: no acceptance probe (not calibrated); TensorRT engines not probed")
        return {}
    if runner_factory is None:
        from vlfront.runtime.backends.tensorrt import TensorRTRunner

        def runner_factory(b, precision):
            return TensorRTRunner(b, precision).load() if TensorRTRunner.usable(b, precision) else None

    out = {}
    for precision in ("fp32", "int8", "fp16"):
        if not all(precision in bundle.manifest["graphs"][g] for g in ("patch_embed", "fusion")):
            continue
        runner = runner_factory(bundle, precision)
        if runner is None:
            continue
        try:
            out[precision] = verify(bundle, runner, precision)
        finally:
            runner.close()
        pe = out[precision]["patch_embed/visual_tokens"]
        say(f"[probe] tensorrt {precision}: patch_embed cosine min {pe['cosine_min']:.6f} mean {pe['cosine_mean']:.6f} "
            f"rel_l2 {pe['rel_l2']:.3e}: passes the gate")
    return out
