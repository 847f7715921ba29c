"""Tampered bundles for both loaders: the manifest schema and the external-data rule (docs/bundle.md).

Each case edits a copy of the tiny bundle in place; both runtimes must refuse it with
the same BundleError message (test_runtime_parity.test_tampered_bundle_refused_by_both).
"""

from __future__ import annotations

import hashlib
import json
import pathlib
import shutil


def edit_manifest(root: pathlib.Path, fn) -> None:
    m = json.loads((root / "manifest.json").read_text())
    fn(m)
    (root / "manifest.json").write_text(json.dumps(m))


def _deep(root: pathlib.Path) -> None:
    (root / "manifest.json").write_text('{"a":' * 100_000 + "1" + "}" * 100_000)


def _unlisted_external_data(root: pathlib.Path) -> None:
    """fusion.onnx re-pointed at unlisted.bin (a copy of the weights), re-signed in the manifest."""
    import onnx

    graph = root / "fusion.onnx"
    model = onnx.load(str(graph), load_external_data=False)
    for t in model.graph.initializer:
        for kv in t.external_data:
            if kv.key == "location":
                kv.value = "unlisted.bin"
    shutil.copy(root / "weights.safetensors", root / "unlisted.bin")
    graph.write_bytes(model.SerializeToString())
    data = graph.read_bytes()

    def sign(m):
        m["files"]["fusion.onnx"] = {"sha256": hashlib.sha256(data).hexdigest(), "size": len(data)}
    edit_manifest(root, sign)


def _graph(m, precision="fp32", name="fusion"):
    return m["graphs"][name][precision]


# name -> (edit, message after "<root>/manifest.json: ", or a needle when exact is False)
SCHEMA_TAMPER = {
    "tokenizer_without_file": (lambda r: edit_manifest(r, lambda m: m["tokenizer"].pop("file")),
                               "tokenizer.file is missing"),
    "tokenizer_file_list": (lambda r: edit_manifest(r, lambda m: m["tokenizer"].update(file=["tokenizer.json"])),
                            "tokenizer.file must be a string, got array"),
    "graph_entry_string": (lambda r: edit_manifest(r, lambda m: m["graphs"]["fusion"].update(fp32="fusion.onnx")),
                           "graphs.fusion.fp32 must be an object, got string"),
    "graph_without_file": (lambda r: edit_manifest(r, lambda m: _graph(m).pop("file")),
                           "graphs.fusion.fp32.file is missing"),
    "image_mean_strings": (lambda r: edit_manifest(r, lambda m: m["config"].update(image_mean=["a", "b", "c"])),
                           "config.image_mean must be 3 numbers, got an array of 3"),
    "hidden_size_missing": (lambda r: edit_manifest(r, lambda m: m["config"].pop("hidden_size")),
                            "config.hidden_size is missing (a config lists every SPEC 1.1 key; none defaults)"),
    "hidden_size_string": (lambda r: edit_manifest(r, lambda m: m["config"].update(hidden_size="64")),
                           "config.hidden_size must be an integer, got string"),
    "hidden_size_inconsistent": (lambda r: edit_manifest(r, lambda m: m["config"].update(hidden_size=128)),
                                 "graphs.fusion.fp32.inputs: visual_tokens has shape ['N', 196, 64], "
                                 "the config makes it ['N', 196, 128]"),
    "io_dtype": (lambda r: edit_manifest(r, lambda m: _graph(m)["inputs"][0].update(dtype="int32")),
                 "graphs.fusion.fp32.inputs: input_ids has dtype int32, SPEC's is int64"),
    "io_names": (lambda r: edit_manifest(r, lambda m: _graph(m)["inputs"][0].update(name="ids")),
                 "graphs.fusion.fp32.inputs names ['ids', 'visual_tokens'], this vlfront serves "
                 "['input_ids', 'visual_tokens']"),
    "files_entry_string": (lambda r: edit_manifest(r, lambda m: m["files"].update({"tokenizer.json": "x"})),
                           "files['tokenizer.json'] must be an object with size and sha256, got string"),
    "files_size_negative": (lambda r: edit_manifest(r, lambda m: m["files"]["tokenizer.json"].update(size=-1)),
                            "files['tokenizer.json'].size must be a non-negative integer, got integer"),
    "calibration_array": (lambda r: edit_manifest(r, lambda m: m.update(calibration=[])),
                          "'calibration' must be an object, got array"),
    "deep_json": (_deep, "JSON nested deeper than 64 levels; not a vlfront manifest (rebuild the bundle)"),
}
SCHEMA_SUFFIX = "; rebuild the bundle with `vlfront export`"
UNSUFFIXED = {"deep_json"}

def _all_hidden(m, d: int) -> None:
    """A consistent manifest for hidden_size d, whose graphs were exported for another."""
    m["config"]["hidden_size"] = d
    for variants in m["graphs"].values():
        for entry in variants.values():
            for t in entry.get("inputs", []) + entry.get("outputs", []):
                if t["name"] in ("visual_tokens", "inputs_embeds"):
                    t["shape"][-1] = d


# Checked when the graph is opened: a needle (the root differs from the manifest path).
EXTERNAL_TAMPER = {
    "manifest_not_the_graph": (lambda r: edit_manifest(r, lambda m: _all_hidden(m, 128)),
                               "graph patch_embed (fp32) output visual_tokens is float32 [?, 196, 64], the manifest "
                               "says float32 [?, 196, 128]; the manifest does not describe this graph"),
    "unlisted_external_data": (_unlisted_external_data,
                               "keeps its data in 'unlisted.bin', a file the manifest does not list"),
}


def expected_message(root: pathlib.Path, name: str) -> str:
    msg = SCHEMA_TAMPER[name][1]
    return f"{root / 'manifest.json'}: {msg}" + ("" if name in UNSUFFIXED else SCHEMA_SUFFIX)
