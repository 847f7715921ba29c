"""`export_bundle`: weights -> tokenizer -> ONNX -> parity -> (calibration) -> manifest.

The bundle is built in a sibling `<out>.partial` directory and swapped into
place only once it validates, so a failed export never harms an existing bundle.
Every byte written depends only on the build inputs (no timestamps, no random
names), so two exports from the same inputs are byte-identical.
"""

from __future__ import annotations

import hashlib
import json
import os
import pathlib
import platform
import shutil
import sys
import time
from contextlib import contextmanager

from vlfront import __version__
from vlfront.config import QWEN_PATTERN, SPECIAL_TOKENS, TOKENIZER_SIZE, Config, preset as get_preset
from vlfront.errors import BundleError, ExportError, VlfrontError
from vlfront.runtime.bundle import FORMAT, MANIFEST, SCHEMA_VERSION, SPECIAL_IDS, Bundle, sha256_file

DEFAULT_RANKS = pathlib.Path("build/cache/qwen.tiktoken")


class Progress:
    """Prints each step with its duration to stderr, and a closing table."""

    def __init__(self, quiet: bool = False):
        self.quiet = quiet
        self.steps: list[tuple[str, float]] = []

    def say(self, text: str) -> None:
        if not self.quiet:
            print(text, file=sys.stderr, flush=True)

    @contextmanager
    def step(self, name: str):
        self.say(f"[export] {name} ...")
        t0 = time.perf_counter()
        yield
        dt = time.perf_counter() - t0
        self.steps.append((name, dt))
        self.say(f"[export] {name}: done in {dt:.1f} s")


def tool_versions() -> dict[str, str]:
    import numpy
    import onnx
    import onnxruntime
    import torch

    return {"vlfront": __version__, "python": platform.python_version(), "torch": torch.__version__,
            "onnx": onnx.__version__, "onnxruntime": onnxruntime.__version__, "numpy": numpy.__version__}


def _sources(config: Config, weights, tokenizer, ranks) -> dict[str, str]:
    src = {"weights": f"sha256:{sha256_file(weights)}" if weights else f"seed:{config.seed}"}
    if tokenizer:
        src["tokenizer"] = f"tokenizer.json sha256:{sha256_file(tokenizer)}"
    else:
        src["tokenizer"] = f"qwen.tiktoken sha256:{sha256_file(ranks)}"
    return src


def _code_digest() -> str:
    """sha256 over the sources that decide what an export writes, so a changed exporter rebuilds."""
    import vlfront
    import vlfront.calibration
    import vlfront.export

    h = hashlib.sha256()
    for pkg in (vlfront, vlfront.export, vlfront.calibration):
        folder = pathlib.Path(pkg.__file__).parent
        for path in sorted(folder.glob("*.py")):
            h.update(path.name.encode() + b"\0" + path.read_bytes())
    return h.hexdigest()


def _fingerprint(preset: str, config: Config, sources: dict, tools: dict, calibrate: bool,
                 calibration_options: dict | None) -> str:
    blob = json.dumps({"preset": preset, "config": config.to_dict(), "sources": sources, "tools": tools,
                       "calibrate": calibrate, "calibration_options": calibration_options or {},
                       "code": _code_digest()}, sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()


def _up_to_date(out: pathlib.Path, fingerprint: str) -> bool:
    try:
        bundle = Bundle.open(out)
        if bundle.manifest.get("build_inputs") != fingerprint:
            return False
        bundle.verify_all()
        return True
    except BundleError:
        return False


def _prepare_dir(out: pathlib.Path) -> pathlib.Path:
    partial = out.with_name(out.name + ".partial")
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        if partial.exists():
            shutil.rmtree(partial)
        partial.mkdir()
        probe = partial / ".write-test"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as e:
        raise ExportError(f"cannot write the bundle at {out}: {e.strerror} ({e.filename}); "
                          "choose a writable --out directory") from None
    return partial


def _swap_into_place(partial: pathlib.Path, out: pathlib.Path) -> None:
    old = out.with_name(out.name + ".old")
    if old.exists():
        shutil.rmtree(old)
    if out.exists():
        out.rename(old)
    partial.rename(out)
    if old.exists():
        shutil.rmtree(old)


def write_manifest(root: pathlib.Path, manifest: dict) -> None:
    """Recompute `files` (sha256 + size of everything but the manifest) and write manifest.json atomically."""
    files = {}
    for path in sorted(p for p in root.rglob("*") if p.is_file() and p.name != MANIFEST):
        rel = path.relative_to(root).as_posix()
        if rel.endswith(".tmp"):
            continue
        files[rel] = {"sha256": sha256_file(path), "size": path.stat().st_size}
    manifest["files"] = files
    write_listed(root, manifest)


def write_listed(root: pathlib.Path, manifest: dict) -> None:
    """Write manifest.json atomically as given, keeping its `files` section (no rehashing)."""
    tmp = root / (MANIFEST + ".tmp")
    tmp.write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    os.replace(tmp, root / MANIFEST)


def _tokenizer_asset(partial: pathlib.Path, tokenizer, ranks: pathlib.Path) -> None:
    from vlfront.export import tokenizer_asset

    dest = partial / "tokenizer.json"
    if tokenizer:
        tokenizer_asset.validate_tokenizer_json(tokenizer)
        shutil.copyfile(tokenizer, dest)
        return
    cached = ranks.parent / f"tokenizer-{sha256_file(ranks)[:16]}.json"
    if not cached.exists():
        tokenizer_asset.write_tokenizer_json(tokenizer_asset.load_ranks(ranks), cached)
    shutil.copyfile(cached, dest)


def export_bundle(preset: str = "default", out: str | os.PathLike = "build/default", *, weights=None,
                  tokenizer=None, ranks=None, seed: int = 0, calibrate: bool = True, force: bool = False,
                  quiet: bool = False, calibration_options: dict | None = None) -> pathlib.Path:
    """Build a validated bundle at `out`. Returns its path.

    Args:
        preset: "default" or "tiny" (SPEC 1.1).
        weights: a SPEC-named weights.safetensors to export instead of seeded random weights.
        tokenizer: a user's tokenizer.json instead of the one built from the Qwen ranks.
        ranks: the Qwen ranks file (`make setup` fetches it to build/cache/qwen.tiktoken).
        calibrate: also make the INT8/FP16 variants behind the accuracy gate.
        force: rebuild even when a valid bundle with the same build inputs exists.
    Raises:
        ConfigError, WeightsError, TokenizerError, ExportError (with the failing figure).
    """
    progress = Progress(quiet)
    t_start = time.perf_counter()
    config = get_preset(preset)
    config = Config(**{**config.__dict__, "seed": seed}).validate()
    out = pathlib.Path(out)
    ranks = pathlib.Path(ranks) if ranks else DEFAULT_RANKS
    if not tokenizer and not ranks.is_file():
        from vlfront.export import tokenizer_asset

        with progress.step(f"fetch the Qwen ranks into {ranks}"):
            tokenizer_asset.fetch_ranks(ranks)
    for name, given in (("--weights", weights), ("--tokenizer", tokenizer)):
        if given and not pathlib.Path(given).is_file():
            raise ExportError(f"{name} {given}: no such file")
    tools = tool_versions()
    sources = _sources(config, weights, tokenizer, ranks)
    fingerprint = _fingerprint(preset, config, sources, tools, calibrate, calibration_options)
    if not force and _up_to_date(out, fingerprint):
        progress.say(f"[export] {out} is a valid bundle built from the same inputs; not rebuilding (use --force)")
        return out
    partial = _prepare_dir(out)
    try:
        manifest = _build(preset, config, partial, weights, tokenizer, ranks, sources, tools, fingerprint,
                          calibrate, calibration_options, progress)
        with progress.step("validate the bundle"):
            Bundle.open(partial).verify_all()
        _swap_into_place(partial, out)
    except VlfrontError:
        shutil.rmtree(partial, ignore_errors=True)
        raise
    except Exception:
        shutil.rmtree(partial, ignore_errors=True)
        raise
    if not quiet:
        _summary(out, manifest, progress, time.perf_counter() - t_start)
    return out


def _build(preset, config, partial, weights, tokenizer, ranks, sources, tools, fingerprint, calibrate,
           calibration_options, progress) -> dict:
    from vlfront.export.onnx_export import export_graphs, WEIGHTS_FILE
    from vlfront.export.parity import run_parity
    from vlfront.export.reference import FrontEnd

    with progress.step("weights" + (f" from {weights}" if weights else f" (random, seed {config.seed})")):
        front = FrontEnd(config)
        front.load(weights) if weights else front.init_weights(config.seed)
        front.save(partial / WEIGHTS_FILE)
    with progress.step("tokenizer.json" + (f" from {tokenizer}" if tokenizer else " from the Qwen ranks")):
        _tokenizer_asset(partial, tokenizer, ranks)
        from vlfront.export.hf_tokenizer import write_hf_files  # transformers' AutoTokenizer + chat template

        write_hf_files(partial, config)
    with progress.step("trace patch_embed and fusion to ONNX (opset 17) + onnx.checker"):
        graphs = export_graphs(front, partial)
    with progress.step("parity: ONNX Runtime vs PyTorch reference (random + real photos)"):
        parity = run_parity(front, partial)
    manifest = {
        "schema_version": SCHEMA_VERSION, "format": FORMAT, "preset": preset, "config": config.to_dict(),
        "special_tokens": {v: k for k, v in sorted(SPECIAL_TOKENS.items())}, "special_ids": SPECIAL_IDS,
        "tokenizer": {"file": "tokenizer.json", "vocab_size": TOKENIZER_SIZE, "normalization": "NFC",
                      "pattern": QWEN_PATTERN,
                      "transformers_files": ["tokenizer.json", "tokenizer_config.json", "special_tokens_map.json"]},
        "preprocessing": {"exif_transpose": True, "color": "RGB", "resize": [config.image_size] * 2,
                          "resample": "bicubic", "pixel_layout": "NHWC", "pixel_dtype": "uint8",
                          "image_mean": list(config.image_mean), "image_std": list(config.image_std)},
        "weights": {"file": WEIGHTS_FILE, "source": sources["weights"]},
        "sources": sources, "graphs": graphs, "parity": parity, "calibration": {}, "engines": {},
        "build_inputs": fingerprint, "tools": tools,
    }
    for variants in graphs.values():
        variants["fp32"]["external_data"] = [WEIGHTS_FILE]
    del front
    write_manifest(partial, manifest)
    if calibrate:
        from vlfront.calibration import calibrate_bundle

        calibrate_bundle(partial, progress=progress, **(calibration_options or {}))
        manifest = json.loads((partial / MANIFEST).read_text())
    return manifest


def _summary(out: pathlib.Path, manifest: dict, progress: Progress, total: float) -> None:
    lines = [f"\nbundle {out}  ({manifest['preset']}, D={manifest['config']['hidden_size']})", "",
             f"{'file':<32} {'size':>12}  sha256"]
    for rel, entry in manifest["files"].items():
        lines.append(f"{rel:<32} {entry['size']:>12,}  {entry['sha256'][:16]}")
    lines += ["", f"{'parity (fp32, ORT vs PyTorch)':<40} {'max_abs':>10} {'max_rel':>10} {'cos_min':>10}"]
    for graph, outs in manifest["parity"].items():
        for key, fig in outs.items():
            lines.append(f"{graph + ':' + key:<40} {fig['max_abs']:>10.2e} {fig['max_rel']:>10.2e} "
                         f"{fig['cosine_min']:>10.7f}")
    for graph, variants in manifest.get("calibration", {}).get("variants", {}).items():
        for prec, fig in variants.items():
            lines.append(f"{graph}.{prec}: {fig.get('verdict', '?')}")
    lines += ["", "steps: " + ", ".join(f"{n.split(' ')[0]} {t:.1f}s" for n, t in progress.steps),
              f"total: {total:.1f} s"]
    progress.say("\n".join(lines))
