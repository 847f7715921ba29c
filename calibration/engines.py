"""TensorRT engines for a bundle: `vlfront engines` and `build_engines`.

One engine per ONNX file the manifest serves (fp32, the INT8 Q/DQ graph, the
FP16 graphs; the int8 precision's fusion is the fp32 file, so it shares that
engine), each built as a strongly typed network (`STRONGLY_TYPED`: precisions
come from the graph's own types and Q/DQ nodes, no FP16/INT8 builder flags,
which TensorRT 11 removed) through the ONNX parser, with one optimisation
profile over the batch, and a timing cache per TensorRT version and GPU
(`engines/timing-<version>-<gpu>-sm<cc>.cache`: TensorRT refuses, or worse
misuses, another version's or GPU's cache) so rebuilds reuse tactic timings.
Each engine's metadata (TensorRT version, GPU, compute capability, precision,
ONNX file and sha256, profile) goes into the manifest `engines` section, which
the TensorRT backend checks at load.

Before anything is built, every graph is checked on the CPU against the
parser's documented rules (calibration/trt_rules.py), and patch_embed is built
before fusion, so a graph TensorRT would refuse fails in seconds.

Written against the documented TensorRT 10.x Python API (pinned 10.13.3) and NOT
verified on a GPU in this repository (no TensorRT here): run `make gpu-setup &&
make gpu-check` where one is. Without tensorrt or a CUDA GPU it prints one line
saying why it skipped.
"""

from __future__ import annotations

import os
import pathlib
import sys

from vlfront.calibration.manifest import write_listed, write_manifest
from vlfront.calibration.trt_rules import require_parsable
from vlfront.errors import EngineError
from vlfront.runtime.backends.base import GRAPHS
from vlfront.runtime.backends.tensorrt import (ENGINE_DIR, engine_key, environment, logger, plan_path,
                                               timing_cache_path, validate_entry)
from vlfront.runtime.bundle import Bundle

WORKSPACE_BYTES = 2 << 30


def profiles(config, min_batch: int, opt_batch: int, max_batch: int) -> dict[str, dict]:
    """Optimisation profile per graph: {input: {"min", "opt", "max"}}; the batch sizes count requests.

    A batch of max_batch requests fits whole: each request carries at most max_seq_len // (tokens_per_image
    + 2) images (5 at 1024 tokens), so patch_embed takes up to max_batch * 5 images and the fusion graph's
    visual_tokens as many (or none: a text-only batch). Larger batches are split by the runner.
    """
    if not 1 <= min_batch <= opt_batch <= max_batch:
        raise EngineError(f"batch sizes min={min_batch}, opt={opt_batch}, max={max_batch}: need 1 <= min <= opt <= max")
    size, tpi, d, seq = config.image_size, config.tokens_per_image, config.hidden_size, config.max_seq_len
    per_request = seq // (tpi + 2)
    return {
        "patch_embed": {"pixel_values": {"min": [1, size, size, 3], "opt": [opt_batch, size, size, 3],
                                         "max": [max_batch * per_request, size, size, 3]}},
        "fusion": {"input_ids": {"min": [min_batch, seq], "opt": [opt_batch, seq], "max": [max_batch, seq]},
                   "visual_tokens": {"min": [0, tpi, d], "opt": [opt_batch, tpi, d],
                                     "max": [max_batch * per_request, tpi, d]}},
    }


def served_files(manifest: dict) -> dict[str, tuple[str, str]]:
    """{onnx file: (graph, precision)} for every variant the manifest serves (a shared file once).

    patch_embed's files come first: they build in seconds, so a refusal shows before fusion's long build.
    """
    out = {}
    for graph in GRAPHS:
        variants = manifest["graphs"].get(graph) or {}
        for precision in ("fp32", "int8", "fp16"):
            entry = variants.get(precision)
            if entry and entry["file"] not in out:
                out[entry["file"]] = (graph, precision)
    return out


def _build_one(trt, cache_holder: dict, onnx_path: pathlib.Path, profile: dict) -> bytes:
    log = logger(trt)
    builder = trt.Builder(log)
    network = builder.create_network(1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED))
    parser = trt.OnnxParser(network, log)
    if not parser.parse_from_file(os.fspath(onnx_path)):
        errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
        raise EngineError(f"{onnx_path.name}: the TensorRT ONNX parser refused it: {errors}")
    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, WORKSPACE_BYTES)
    opt = builder.create_optimization_profile()
    for name, dims in profile.items():
        if opt.set_shape(name, dims["min"], dims["opt"], dims["max"]) is False:
            raise EngineError(f"{onnx_path.name}: TensorRT refused the profile of {name}: {dims}")
    if config.add_optimization_profile(opt) < 0:
        raise EngineError(f"{onnx_path.name}: TensorRT refused the optimisation profile {profile}")
    if cache_holder.get("cache") is None:
        cache_holder["cache"] = config.create_timing_cache(cache_holder.get("bytes", b""))
    if not config.set_timing_cache(cache_holder["cache"], ignore_mismatch=False):
        raise EngineError(f"{onnx_path.name}: TensorRT refused the timing cache {cache_holder.get('file')} "
                          "(another TensorRT version or GPU wrote it?); delete it and rebuild")
    plan = builder.build_serialized_network(network, config)
    if plan is None:
        raise EngineError(f"{onnx_path.name}: TensorRT could not build an engine (see the TensorRT log above)")
    return bytes(plan)


def build_engines(bundle_dir, *, min_batch: int = 1, opt_batch: int = 8, max_batch: int = 32,
                  progress=None) -> dict | None:
    """Build an engine for every ONNX variant the bundle serves and record them in the manifest.

    Returns:
        The manifest's new `engines` section, or None when skipped (no tensorrt or no CUDA GPU; one line says why).
    Raises:
        EngineError: bad batch sizes, a graph that breaks TensorRT's documented parser rules (checked first, on
            any machine), or the parser/builder refused a graph (the bundle keeps its old engines).
        BundleError: a new engine fails the bundle's acceptance probe (vlfront.runtime.probe.verify_engines).
    """
    say = progress.say if progress else (lambda text: print(text, file=sys.stderr, flush=True))
    root = pathlib.Path(bundle_dir)
    bundle = Bundle.open(root)
    shapes = profiles(bundle.config, min_batch, opt_batch, max_batch)
    require_parsable(root, shapes)
    try:
        env = environment()
    except EngineError as e:
        say(f"[engines] skipped: {e}")
        return None
    import tensorrt as trt

    files = served_files(bundle.manifest)
    (root / ENGINE_DIR).mkdir(exist_ok=True)
    cache_rel = timing_cache_path(env)
    cache_file = root / cache_rel
    holder = {"bytes": cache_file.read_bytes() if cache_file.is_file() else b"", "file": cache_rel}
    entries, staged = {}, []
    try:
        for onnx_file, (graph, precision) in files.items():
            say(f"[engines] {onnx_file} -> {plan_path(onnx_file)} ({precision}, batch {min_batch}/{opt_batch}/{max_batch})")
            onnx_path = bundle.path(onnx_file)
            for rel in bundle.graph(graph, precision).get("external_data", []):
                bundle.path(rel)
            plan = _build_one(trt, holder, onnx_path, shapes[graph])
            tmp = root / (plan_path(onnx_file) + ".tmp")
            tmp.write_bytes(plan)
            staged.append(tmp)
            key = engine_key(onnx_file)
            entries[key] = validate_entry(key, {
                "file": plan_path(onnx_file), "graph": graph, "precision": precision, "onnx": onnx_file,
                "onnx_sha256": bundle.manifest["files"][onnx_file]["sha256"], "tensorrt": env["tensorrt"],
                "gpu": env["gpu"], "compute_capability": env["compute_capability"], "profile": shapes[graph],
                "strongly_typed": True, "timing_cache": cache_rel})
        manifest = dict(bundle.manifest)
        old = {e.get("file") for e in (manifest.get("engines") or {}).values() if isinstance(e, dict)}
        manifest["engines"] = {}
        manifest["files"] = {rel: e for rel, e in manifest["files"].items() if rel not in old}
        write_listed(root, manifest)  # stop listing the old plans before they are replaced
        for tmp in staged:
            os.replace(tmp, tmp.with_suffix(""))
        if holder.get("cache") is not None:
            cache_file.write_bytes(bytes(holder["cache"].serialize()))
        manifest["engines"] = entries
        write_manifest(root, manifest)
    finally:
        for tmp in staged:
            tmp.unlink(missing_ok=True)
    from vlfront.runtime.probe import verify_engines

    verify_engines(root, say=say)  # the bundle's acceptance probe on the new engines; BundleError below the gate
    say(f"[engines] {len(entries)} engine(s) for TensorRT {env['tensorrt']} on {env['gpu']} "
        f"(compute capability {env['compute_capability']})")
    return entries


def engines_command(args) -> None:
    """`vlfront engines --bundle DIR [--min-batch 1] [--opt-batch 8] [--max-batch 32]`."""
    build_engines(args.bundle, min_batch=args.min_batch, opt_batch=args.opt_batch, max_batch=args.max_batch)
