"""`calibrate_bundle`: make the INT8/FP16 variants of a bundle and ship those that pass the gate.

Steps: open and verify the fp32 bundle -> calibration set -> quantization-ready
rewrite of patch_embed (checked against fp32) -> INT8 Q/DQ -> FP16 of both
graphs -> gate on held-out images (per graph and end to end through the
runtime) -> acceptance probe for load time (vlfront.runtime.probe) -> report +
manifest (with the CPU the gate figures were measured on).

The manifest on disk is valid at every moment: variants from an earlier
calibration (and engines built from them) are dropped from it first, new files
are written under names it does not list, and it is rewritten atomically only
once the verdicts are in. On any error the new files are removed and the
bundle is the fp32 one it was.
"""

from __future__ import annotations

import contextlib
import os
import pathlib
import sys
import time

import numpy as np
import onnx

from vlfront.calibration import data as cdata
from vlfront.calibration import gate, graphs, quantize, report, tables16
from vlfront.calibration.manifest import write_listed, write_manifest
from vlfront.errors import CalibrationError
from vlfront.runtime import probe
from vlfront.runtime.bundle import Bundle, sha256_file

GRAPHS = ("patch_embed", "fusion")
PRECISIONS = ("int8", "fp16")
FILES = {("patch_embed", "int8"): "patch_embed.int8.onnx", ("patch_embed", "fp16"): "patch_embed.fp16.onnx",
         ("fusion", "fp16"): "fusion.fp16.onnx"}
REWRITE_MAX_REL = 1e-5
FUSION_INT8 = ("not quantized: the fusion graph is gathers and adds, with no matrix product for int8 to speed "
               "up. Measured on the default preset (docs/calibration.md): int8 tables pass the gate but ONNX "
               "Runtime CPU dequantizes the whole token table on every call (about 10x slower than fp32) and "
               "the file adds a second, int8 copy of the tables (120 MB). The int8 precision serves fusion.onnx.")
FP16 = ("patch_embed (from the quantization-ready rewrite): every float initializer, constant and Cast to float "
        "in FP16 (values beyond +-65504 clamped), Cast at the edges; fusion (from fusion.onnx): the embedding "
        "tables stored in FP16, gathered rows cast to float32, arithmetic in float32 (calibration/tables16.py: "
        "ONNX Runtime CPU otherwise casts the whole token table on every call); inputs and outputs keep their "
        "fp32 names and dtypes")


class _Printer:
    """Progress for a standalone `vlfront calibrate`: each step with its duration, on stderr."""

    def say(self, text: str) -> None:
        print(text, file=sys.stderr, flush=True)

    @contextlib.contextmanager
    def step(self, name: str):
        self.say(f"[calibrate] {name} ...")
        t0 = time.perf_counter()
        yield
        self.say(f"[calibrate] {name}: done in {time.perf_counter() - t0:.1f} s")


def calibrate_bundle(bundle_dir: str | os.PathLike, *, data: str | os.PathLike | None = None, method: str = "minmax",
                     mean_cosine: float = gate.Thresholds.mean_cosine, min_cosine: float = gate.Thresholds.min_cosine, progress=None) -> dict:
    """Make the INT8 and FP16 variants of a bundle, gate them on held-out images, ship those that pass.

    Args:
        bundle_dir: a bundle (or an export's partial directory) with a valid fp32 manifest.
        data: None (the photos shipped with scikit-image and matplotlib), a folder of images, or a
            CSV/Parquet/JSONL manifest with an `image` column and an optional `text` column.
        method: activation range of the INT8 graph: "minmax", "entropy" or "percentile".
        mean_cosine, min_cosine: the gate (per-token cosine against fp32, mean and minimum).
        progress: an object with `step(name)` (context manager) and `say(text)`; default prints to stderr.
    Returns:
        The manifest's `calibration` section (figures, verdicts, what was quantized and how).
    Raises:
        CalibrationError: bad data or options, or a rewrite that does not reproduce fp32.
        BundleError: the bundle is not valid. In both cases the bundle stays a valid fp32 bundle.

    Example:
        >>> section = calibrate_bundle("build/default")
        >>> section["precisions"]["int8"]["shipped"]
        True
    """
    progress = progress or _Printer()
    thresholds = gate.Thresholds(mean_cosine, min_cosine).validate()
    if method not in quantize.METHODS:
        raise CalibrationError(f"method={method!r}: choose one of {quantize.METHODS}")
    root = pathlib.Path(bundle_dir)
    with progress.step(f"calibrate: verify the fp32 bundle {root}"):
        bundle = Bundle.open(root)
        fp32 = {g: bundle.graph(g, "fp32") for g in GRAPHS}
        for entry in fp32.values():
            for rel in [entry["file"], *entry.get("external_data", [])]:
                bundle.path(rel)
    with progress.step("data: calibration and held-out images"):
        cset = cdata.load_calibration_set(data)
        size = bundle.config.image_size
        calib_px, held_px = cdata.pixels(cset.calibration, size), cdata.pixels(cset.held_out, size)
        progress.say(f"[calibrate] {cset.source}: {len(cset.calibration)} calibration, "
                     f"{len(cset.held_out)} held-out images")
    manifest = _drop_variants(root, bundle.manifest, progress)
    written: list[pathlib.Path] = []
    try:
        section = _calibrate(root, bundle, manifest, fp32, cset, calib_px, held_px, method, thresholds, progress,
                             written)
    except BaseException:
        for path in written:
            path.unlink(missing_ok=True)
        raise
    _say_verdicts(section, progress)
    return section


def _say_verdicts(section: dict, progress) -> None:
    for precision, v in section["precisions"].items():
        files = sorted({section["variants"][g][precision]["file"] for g in GRAPHS})
        e2e = section["figures"][precision].get("end_to_end/inputs_embeds[image tokens]", {})
        if v["shipped"]:
            progress.say(f"[calibrate] {precision}: shipped ({', '.join(files)}); end to end on image tokens: "
                         f"cosine mean {e2e.get('cosine_mean', float('nan')):.7f}, "
                         f"min {e2e.get('cosine_min', float('nan')):.7f}")
        else:
            progress.say(f"[calibrate] {precision}: NOT shipped: {'; '.join(v['failures'])}")


def _calibrate(root, bundle, manifest, fp32, cset, calib_px, held_px, method, thresholds, progress, written):
    config = bundle.config
    with progress.step("rewrite: quantization-ready patch_embed, checked against fp32"):
        prepared = graphs.prepare_patch_embed(graphs.load_inline(root / fp32["patch_embed"]["file"]), config)
        _check_rewrite(prepared, bundle.path(fp32["patch_embed"]["file"]), held_px)
    path = root / FILES[("patch_embed", "int8")]
    with progress.step(f"int8: patch_embed Q/DQ ({method}, {len(calib_px)} calibration images)"):
        written.append(path)
        qinfo = quantize.quantize_patch_embed(prepared, calib_px, path, method)
        onnx.checker.check_model(os.fspath(path), full_check=True)
    with progress.step("fp16: patch_embed and fusion"):
        for graph in GRAPHS:
            path = root / FILES[(graph, "fp16")]
            written.append(path)
            if graph == "patch_embed":
                half = graphs.to_float16(prepared, "vlfront patch_embed stage, FP16")
            else:
                half = tables16.tables_to_float16(graphs.load_inline(root / fp32[graph]["file"]),
                                                  "vlfront fusion stage, FP16 tables")
            graphs.save(half, path)
    entries = _variant_entries(root, fp32)
    candidate = {**manifest, "graphs": {g: {**manifest["graphs"][g], **entries[g]} for g in GRAPHS},
                 "files": {**manifest["files"], **{rel: {"sha256": sha256_file(root / rel),
                                                         "size": (root / rel).stat().st_size}
                                                   for rel in (p.relative_to(root).as_posix() for p in written)}}}
    with progress.step(f"gate: int8 and fp16 against fp32 on {len(cset.held_out)} held-out images"):
        gate_bundle = Bundle(root, candidate, config, set(bundle._verified))
        rows = gate.evaluate(gate_bundle, cset.held_out, held_px, PRECISIONS, thresholds)
    fails = gate.verdicts(rows)
    shipped = [p for p in PRECISIONS if not fails[p]]
    section = _section(method, thresholds, cset, qinfo, rows, fails, entries)
    if shipped:
        with progress.step(f"probe: {probe.FILE} ({min(probe.MAX_IMAGES, len(held_px))} held-out images), "
                           f"checked on {', '.join(shipped)}"):
            section["probe"] = _write_probe(root, gate_bundle, cset, held_px, shipped, thresholds, written)
    with progress.step("report: reports/calibration.* + manifest"):
        for (graph, precision), rel in FILES.items():
            if precision not in shipped:
                (root / rel).unlink(missing_ok=True)
        for graph in GRAPHS:
            manifest["graphs"][graph].update({p: entries[graph][p] for p in shipped})
        manifest["calibration"] = section
        written.extend(root / rel for rel in (report.PARQUET, report.MARKDOWN))
        report.write_report(root, rows, section)
        write_manifest(root, manifest)
    return section


def _write_probe(root, gate_bundle, cset, held_px, shipped, thresholds, written) -> dict:
    """probe.safetensors from the fp32 runtime, and its figures on each shipped precision (which must pass)."""
    path = root / probe.FILE
    written.append(path)
    rt32 = gate._open_runtime(gate_bundle, "fp32")
    try:
        tensors = probe.make(rt32, cset.held_out, held_px)
    finally:
        rt32.close()
    probe.save(tensors, path)
    gate_bundle.manifest["files"][probe.FILE] = {"sha256": sha256_file(path), "size": path.stat().st_size}
    figs = {}
    for precision in shipped:
        rt = gate._open_runtime(gate_bundle, precision)
        try:
            figs[precision] = probe.measure(gate_bundle, rt.runner)
        finally:
            rt.close()
        bad = [f"{k} {w}" for k, f in figs[precision].items() for w in probe.failures(f, thresholds.to_dict())]
        if bad:  # a subset of the held-out images that passed the gate: cannot fail unless something is broken
            raise CalibrationError(f"{precision}: the acceptance probe fails where the gate passed ({'; '.join(bad)}); "
                                   "this is a vlfront bug, please report it")
    n = len(tensors["patch_embed.pixel_values"])
    return {"file": probe.FILE, "images": [im.path.name for im in cset.held_out[:n]],
            "tensors": {name: {"dtype": a.dtype.name, "shape": list(a.shape)} for name, a in sorted(tensors.items())},
            "rule": "each graph on the serving backend: per-token cosine mean >= thresholds.mean_cosine and "
                    "min >= thresholds.min_cosine, finite (docs/bundle.md)",
            "fusion_feeds": "fusion.input_ids and patch_embed.visual_tokens[:1]; compared on attended tokens",
            "figures": figs}


def _check_rewrite(prepared, fp32_path: pathlib.Path, pixels: np.ndarray) -> None:
    """The rewrite must reproduce the fp32 graph (to float32 rounding) before it is quantized."""
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.log_severity_level = 3
    run = {name: ort.InferenceSession(src, opts, providers=["CPUExecutionProvider"])
           for name, src in (("fp32", os.fspath(fp32_path)), ("rewrite", prepared.SerializeToString()))}
    px = pixels[:8]
    want = run["fp32"].run(None, {"pixel_values": px})[0]
    got = run["rewrite"].run(None, {"pixel_values": px})[0]
    rel = float(np.abs(got - want).max() / max(float(np.abs(want).max()), 1e-30))
    if not rel <= REWRITE_MAX_REL:
        raise CalibrationError(f"the quantization-ready patch_embed differs from patch_embed.onnx: max_rel {rel:.3g} "
                               f"> {REWRITE_MAX_REL:g}; this is a vlfront bug, please report it")


def _variant_entries(root: pathlib.Path, fp32: dict) -> dict:
    """Manifest `graphs` entries of the candidates: same inputs/outputs as fp32, their own file and opset."""
    entries = {g: {} for g in GRAPHS}
    for (graph, precision), rel in FILES.items():
        model = onnx.load(os.fspath(root / rel), load_external_data=False)
        opset = next(o.version for o in model.opset_import if o.domain in ("", "ai.onnx"))
        entries[graph][precision] = {"file": rel, "opset": int(opset), "inputs": fp32[graph]["inputs"],
                                     "outputs": fp32[graph]["outputs"]}
    entries["fusion"]["int8"] = dict(fp32["fusion"])  # fp32 kept: see FUSION_INT8
    return entries


def _section(method, thresholds, cset, qinfo, rows, fails, entries) -> dict:
    import onnxruntime
    import polars

    figs: dict = {}
    for r in rows:
        figs.setdefault(r["precision"], {})[f"{r['scope']}/{r['output']}"] = {
            k: r[k] for k in ("cosine_min", "cosine_mean", "rel_l2", "max_abs", "finite", "tokens", "verdict")}
    variants: dict = {g: {} for g in GRAPHS}
    for graph in GRAPHS:
        for precision in PRECISIONS:
            own = [f for f in fails[precision] if f.startswith(graph + " ")]
            if not fails[precision]:
                verdict = "pass" if (graph, precision) in FILES else "fp32 kept (passes end to end)"
            elif own:
                verdict = "fail: " + "; ".join(own)
            else:
                verdict = "not shipped: " + "; ".join(fails[precision])
            variants[graph][precision] = {"file": entries[graph][precision]["file"], "verdict": verdict}
    return {
        "method": method, "thresholds": thresholds.to_dict(), "data": cset.describe(),
        "quantization": {"patch_embed": qinfo, "fusion": FUSION_INT8}, "fp16": FP16,
        "variants": variants, "figures": figs,
        "precisions": {p: {"shipped": not fails[p], "failures": fails[p]} for p in PRECISIONS},
        "report": [report.PARQUET, report.MARKDOWN],
        "machine": {**probe.cpu_info(), "note": "where the figures above were measured; the acceptance probe "
                                                "re-checks them on the serving machine at load"},
        "tools": {"onnx": onnx.__version__, "onnxruntime": onnxruntime.__version__, "numpy": np.__version__,
                  "polars": polars.__version__},
    }


def _drop_variants(root: pathlib.Path, manifest: dict, progress) -> dict:
    """A copy of `manifest` without earlier variants, calibration and engines; written (and their files
    deleted) only when there was something to drop, so the manifest on disk never lists a missing file."""
    manifest = {**manifest, "graphs": {g: dict(v) for g, v in manifest["graphs"].items()}}
    keep = set()
    for variants in manifest["graphs"].values():
        entry = variants.get("fp32", {})
        keep.update([entry.get("file"), *entry.get("external_data", [])])
    drop = set()
    for variants in manifest["graphs"].values():
        for precision in [p for p in variants if p != "fp32"]:
            entry = variants.pop(precision)
            drop.update([entry.get("file"), *entry.get("external_data", [])])
    # Engines built from the fp32 graphs stay valid; those built from earlier variants go.
    engines = {k: e for k, e in (manifest.get("engines") or {}).items()
               if not (isinstance(e, dict) and e.get("onnx") in keep)}
    for entry in engines.values():
        if isinstance(entry, dict):
            drop.add(entry.get("file"))
    calibration = manifest.get("calibration") or {}
    drop.update(calibration.get("report", []))
    drop.add((calibration.get("probe") or {}).get("file"))
    drop = {rel for rel in drop if rel and rel not in keep and rel in manifest["files"]}
    if not drop and not engines and not calibration:
        return manifest
    if engines:
        progress.say(f"[calibrate] dropping {len(engines)} TensorRT engine(s) built from the old variants; "
                     "rebuild them with `vlfront engines --bundle DIR`")
    manifest["calibration"] = {}
    manifest["engines"] = {k: e for k, e in (manifest.get("engines") or {}).items() if k not in engines}
    # The kept files are unchanged, so their listed hashes stay; the manifest stops listing the dropped
    # files before they are deleted.
    manifest["files"] = {rel: e for rel, e in manifest["files"].items() if rel not in drop}
    write_listed(root, manifest)
    for rel in sorted(drop):
        (root / rel).unlink(missing_ok=True)
    return manifest
