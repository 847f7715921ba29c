"""The manifest schema (docs/bundle.md) as data, and its one validator, run once at load.

Every key a runtime reads is checked here for presence, JSON type and value before any of
it is used, so a malformed manifest is a BundleError naming the key, never a bare KeyError
or TypeError later. Keys this vlfront does not read are allowed (forward compatible);
optional sections (calibration, engines) are checked by shape here and by their readers
where read. The C++ loader (bundle.cc) applies the same rules with the same messages;
tests/cpp/test_runtime_parity.py runs one table of tampered manifests through both.
"""

from __future__ import annotations

import re

from vlfront.config import Config
from vlfront.errors import BundleError, ConfigError
from vlfront.runtime.json_guard import MAX_JSON_DEPTH as MAX_DEPTH, depth_exceeds  # noqa: F401 (re-exported)

# config keys (SPEC 1.1): all required, none defaults. JSON kind of each.
CONFIG_KEYS = {"hidden_size": "integer", "image_size": "integer", "patch_size": "integer",
               "vocab_rows": "integer", "max_seq_len": "integer", "max_text_tokens": "integer",
               "image_mean": "3 numbers", "image_std": "3 numbers", "vision_pos": "string"}
CONFIG_OPTIONAL = {"seed": "integer", "tokens_per_image": "integer"}
SECTIONS = ("config", "files", "graphs", "special_ids", "tokenizer")
OPTIONAL_SECTIONS = ("calibration", "engines")
DTYPES = ("uint8", "int64", "float32", "float16")
# Each graph's inputs and outputs: name -> (dtype, shape); a str dim is a config key,
# "N"/"B" a batch dimension (any name).
GRAPH_IO = {
    "patch_embed": {"inputs": {"pixel_values": ("uint8", ("N", "image_size", "image_size", 3))},
                    "outputs": {"visual_tokens": ("float32", ("N", "tokens_per_image", "hidden_size"))}},
    "fusion": {"inputs": {"input_ids": ("int64", ("B", "max_seq_len")),
                          "visual_tokens": ("float32", ("N", "tokens_per_image", "hidden_size"))},
               "outputs": {"inputs_embeds": ("float32", ("B", "max_seq_len", "hidden_size"))}},
}
_BATCH = ("N", "B")
_SHA256 = re.compile(r"[0-9a-f]{64}")


def json_kind(value) -> str:
    """The JSON type name of a parsed value (what both loaders call it in messages)."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int):
        return "integer"
    if isinstance(value, float):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "array"
    return "object" if isinstance(value, dict) else type(value).__name__


def is_int(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def validate(manifest: dict, where: str) -> Config:
    """Check every key the runtime reads (docs/bundle.md); return the config.

    Raises:
        BundleError: naming the first key that is missing, of the wrong JSON type, or
            inconsistent (a graph's shapes against the config).
    """

    def bad(msg: str) -> BundleError:
        return BundleError(f"{where}: {msg}; rebuild the bundle with `vlfront export`")

    for key in SECTIONS:
        if key not in manifest:
            raise BundleError(f"{where}: manifest lacks the {key!r} section")
        if not isinstance(manifest[key], dict):
            raise bad(f"'{key}' must be an object, got {json_kind(manifest[key])}")
    for key in OPTIONAL_SECTIONS:
        if key in manifest and not isinstance(manifest[key], dict):
            raise bad(f"'{key}' must be an object, got {json_kind(manifest[key])}")
    _config(manifest["config"], bad)
    try:
        config = Config.from_dict(manifest["config"])
    except ConfigError as e:
        raise BundleError(f"{where}: invalid config: {e}") from None
    tok = manifest["tokenizer"]
    if "file" not in tok:
        raise bad("tokenizer.file is missing")
    if not isinstance(tok["file"], str):
        raise bad(f"tokenizer.file must be a string, got {json_kind(tok['file'])}")
    _graphs(manifest["graphs"], config, bad)
    return config


def _config(cfg: dict, bad) -> None:
    for key, kind in {**CONFIG_KEYS, **CONFIG_OPTIONAL}.items():
        if key not in cfg:
            if key in CONFIG_OPTIONAL:
                continue
            raise bad(f"config.{key} is missing (a config lists every SPEC 1.1 key; none defaults)")
        v = cfg[key]
        ok = (is_int(v) if kind == "integer" else isinstance(v, str) if kind == "string" else
              isinstance(v, list) and len(v) == 3 and all(isinstance(x, (int, float)) and not isinstance(x, bool)
                                                          for x in v))
        if not ok:
            got = json_kind(v) if not isinstance(v, list) else f"an array of {len(v)}"
            raise bad(f"config.{key} must be {'an ' if kind == 'integer' else 'a ' if kind == 'string' else ''}"
                      f"{kind}, got {got}")


def check_file_entry(rel: str, entry, where: str) -> None:
    """One `files` entry: an object with a non-negative integer size and a sha256 hex digest."""
    _file_entry(rel, entry, lambda msg: BundleError(f"{where}: {msg}; rebuild the bundle with `vlfront export`"))


def _file_entry(rel: str, entry, bad) -> None:
    if not isinstance(entry, dict):
        raise bad(f"files['{rel}'] must be an object with size and sha256, got {json_kind(entry)}")
    size, digest = entry.get("size"), entry.get("sha256")
    if not is_int(size) or size < 0:
        raise bad(f"files['{rel}'].size must be a non-negative integer, got {json_kind(size)}")
    if not isinstance(digest, str) or not _SHA256.fullmatch(digest):
        raise bad(f"files['{rel}'].sha256 must be 64 lowercase hex digits")


def _graphs(graphs: dict, cfg: Config, bad) -> None:
    dims = {"image_size": cfg.image_size, "tokens_per_image": cfg.tokens_per_image, "hidden_size": cfg.hidden_size,
            "max_seq_len": cfg.max_seq_len}
    for name in GRAPH_IO:
        if name not in graphs:
            raise bad(f"graphs.{name} is missing")
    for name, variants in graphs.items():
        if not isinstance(variants, dict):
            raise bad(f"graphs.{name} must be an object, got {json_kind(variants)}")
        if name in GRAPH_IO and "fp32" not in variants:
            raise bad(f"graphs.{name}.fp32 is missing")
        for precision, entry in variants.items():
            at = f"graphs.{name}.{precision}"
            if not isinstance(entry, dict):
                raise bad(f"{at} must be an object, got {json_kind(entry)}")
            if not isinstance(entry.get("file"), str):
                raise bad(f"{at}.file is missing" if "file" not in entry else
                          f"{at}.file must be a string, got {json_kind(entry['file'])}")
            ext = entry.get("external_data", [])
            if not isinstance(ext, list) or not all(isinstance(x, str) for x in ext):
                raise bad(f"{at}.external_data must be an array of strings")
            if name in GRAPH_IO:
                for side in ("inputs", "outputs"):
                    _io(entry.get(side), GRAPH_IO[name][side], dims, f"{at}.{side}", bad)


def _io(specs, want: dict, dims: dict, at: str, bad) -> None:
    if not isinstance(specs, list) or not all(isinstance(t, dict) for t in specs):
        raise bad(f"{at} must be an array of {{name, dtype, shape}} objects")
    names = [t.get("name") if isinstance(t.get("name"), str) else json_kind(t.get("name")) for t in specs]
    if sorted(names) != sorted(want):
        raise bad(f"{at} names {[n[:40] for n in names[:8]]}, this vlfront serves {sorted(want)}")
    for t in specs:
        dtype, shape = want[t["name"]]
        if t.get("dtype") != dtype:
            shown = t["dtype"][:20] if isinstance(t.get("dtype"), str) else json_kind(t.get("dtype"))
            raise bad(f"{at}: {t['name']} has dtype {shown}, SPEC's is {dtype}")
        expect = [d if isinstance(d, int) or d in _BATCH else dims[d] for d in shape]
        got = t.get("shape")
        ok = isinstance(got, list) and len(got) == len(expect) and all(
            (isinstance(g, str) if e in _BATCH else is_int(g) and g == e) for g, e in zip(got, expect))
        if not ok:
            shown = [g if is_int(g) else g[:20] if isinstance(g, str) else json_kind(g) for g in got] \
                if isinstance(got, list) and len(got) <= 8 else json_kind(got)
            raise bad(f"{at}: {t['name']} has shape {shown}, the config makes it {expect}")


_ORT_DTYPES = {"tensor(uint8)": "uint8", "tensor(int64)": "int64", "tensor(float)": "float32",
               "tensor(float16)": "float16"}


def check_graph_io(name: str, precision: str, entry: dict, inputs, outputs, where: str) -> None:
    """The graph file's own inputs/outputs (name, element type, static dims) against its manifest entry.

    `inputs`/`outputs` are (name, dtype, shape) triples read from the loaded graph (dtype as in
    DTYPES, shape dims int or None for symbolic). A manifest that was edited to another config than
    the graphs were exported with fails here, naming the tensor.

    Raises:
        BundleError: a name, dtype or static dimension that differs.
    """
    for side, actual in (("inputs", inputs), ("outputs", outputs)):
        declared = {t["name"]: t for t in entry[side]}
        got = {n: (d, s) for n, d, s in actual}
        if sorted(got) != sorted(declared):
            raise BundleError(f"{where}: graph {name} ({precision}) has {side} {sorted(got)}, the manifest lists "
                              f"{sorted(declared)}; rebuild the bundle")
        for tname, (dtype, shape) in got.items():
            want = declared[tname]
            fixed = [d if is_int(d) else None for d in want["shape"]]
            same_rank = len(shape) == len(fixed)
            if dtype != want["dtype"] or not same_rank or any(
                    g is not None and w is not None and g != w for g, w in zip(shape, fixed)):
                raise BundleError(f"{where}: graph {name} ({precision}) {side[:-1]} {tname} is {dtype} {_dims(shape)}, "
                                  f"the manifest says {want['dtype']} {_dims(fixed)}; the manifest does not describe "
                                  "this graph (rebuild the bundle)")


def _dims(shape) -> str:
    return "[" + ", ".join("?" if d is None else str(d) for d in shape) + "]"


def ort_io(session) -> tuple[list, list]:
    """(inputs, outputs) of an onnxruntime.InferenceSession as check_graph_io takes them."""
    def triples(args):
        return [(a.name, _ORT_DTYPES.get(a.type, a.type), [d if isinstance(d, int) else None for d in a.shape])
                for a in args]
    return triples(session.get_inputs()), triples(session.get_outputs())
