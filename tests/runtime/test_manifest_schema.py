"""The manifest schema (docs/bundle.md, runtime/manifest_schema.py): one validator at load.

Every malformed manifest is a BundleError naming the key, never a bare built-in; a config
is complete and consistent with the graphs' shapes; unknown keys are allowed. A property
test mutates a real manifest at random: Bundle.open raises nothing but BundleError.
"""

from __future__ import annotations

import os
import copy
import json
import shutil

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from vlfront.errors import BundleError
from vlfront.runtime.bundle import Bundle


@pytest.fixture(scope="module")
def manifest(tiny_bundle) -> dict:
    return json.loads((tiny_bundle / "manifest.json").read_text())


@pytest.fixture()
def bundle_dir(tiny_bundle, tmp_path):
    """A copy of the tiny bundle's manifest.json alone (Bundle.open reads only the manifest)."""
    root = tmp_path / "b"
    root.mkdir()
    shutil.copy(tiny_bundle / "manifest.json", root / "manifest.json")
    return root


def _set(path: str, value):
    def edit(m):
        *parents, last = path.split(".")
        node = m
        for p in parents:
            node = node[p]
        if value is _DEL:
            del node[last]
        else:
            node[last] = value
    return edit


_DEL = object()

CASES = {
    "tokenizer_without_file": (_set("tokenizer.file", _DEL), "tokenizer.file is missing"),
    "tokenizer_file_list": (_set("tokenizer.file", ["tokenizer.json"]), "tokenizer.file must be a string, got array"),
    "tokenizer_not_object": (_set("tokenizer", "tokenizer.json"), "'tokenizer' must be an object, got string"),
    "graph_entry_string": (_set("graphs.fusion.fp32", "fusion.onnx"), "graphs.fusion.fp32 must be an object, got string"),
    "graph_without_file": (_set("graphs.fusion.fp32.file", _DEL), "graphs.fusion.fp32.file is missing"),
    "graph_missing": (_set("graphs.patch_embed", _DEL), "graphs.patch_embed is missing"),
    "graph_no_fp32": (_set("graphs.fusion", {}), "graphs.fusion.fp32 is missing"),
    "external_data_not_list": (_set("graphs.fusion.fp32.external_data", "weights.safetensors"),
                               "graphs.fusion.fp32.external_data must be an array of strings"),
    "image_mean_strings": (_set("config.image_mean", ["a", "b", "c"]), "config.image_mean must be 3 numbers"),
    "image_std_two": (_set("config.image_std", [0.2, 0.2]), "config.image_std must be 3 numbers, got an array of 2"),
    "hidden_size_missing": (_set("config.hidden_size", _DEL), "config.hidden_size is missing"),
    "max_seq_len_missing": (_set("config.max_seq_len", _DEL), "config.max_seq_len is missing"),
    "hidden_size_float": (_set("config.hidden_size", 64.0), "config.hidden_size must be an integer, got number"),
    "hidden_size_bool": (_set("config.hidden_size", True), "config.hidden_size must be an integer, got boolean"),
    "vision_pos_int": (_set("config.vision_pos", 3), "config.vision_pos must be a string, got integer"),
    "hidden_size_inconsistent": (_set("config.hidden_size", 128), "visual_tokens has shape ['N', 196, 64], "
                                                                  "the config makes it ['N', 196, 128]"),
    "max_seq_len_inconsistent": (_set("config.max_seq_len", 2048), "input_ids has shape ['B', 1024]"),
    "io_dtype": (lambda m: m["graphs"]["fusion"]["fp32"]["inputs"][0].update(dtype="int32"),
                 "input_ids has dtype int32, SPEC's is int64"),
    "io_names": (lambda m: m["graphs"]["fusion"]["fp32"]["inputs"][0].update(name="ids"),
                 "graphs.fusion.fp32.inputs names ['ids', 'visual_tokens'], this vlfront serves"),
    "io_not_list": (_set("graphs.fusion.fp32.outputs", {"inputs_embeds": 1}),
                    "graphs.fusion.fp32.outputs must be an array"),
    "files_entry_string": (lambda m: m["files"].update({"tokenizer.json": "abc"}),
                           "files['tokenizer.json'] must be an object with size and sha256, got string"),
    "files_size_string": (lambda m: m["files"]["tokenizer.json"].update(size="12"),
                          "files['tokenizer.json'].size must be a non-negative integer, got string"),
    "files_sha_short": (lambda m: m["files"]["tokenizer.json"].update(sha256="abc"),
                        "files['tokenizer.json'].sha256 must be 64 lowercase hex digits"),
    "calibration_list": (_set("calibration", []), "'calibration' must be an object, got array"),
    "engines_string": (_set("engines", "x"), "'engines' must be an object, got string"),
    "files_missing": (_set("files", _DEL), "manifest lacks the 'files' section"),
}


@pytest.mark.parametrize("name", sorted(CASES))
def test_malformed_manifest_names_the_key(bundle_dir, manifest, name):
    edit, needle = CASES[name]
    m = copy.deepcopy(manifest)
    edit(m)
    (bundle_dir / "manifest.json").write_text(json.dumps(m))
    with pytest.raises(BundleError) as err:
        Bundle.open(bundle_dir)
    assert needle in str(err.value), str(err.value)


@pytest.mark.parametrize("text, needle", [
    ('{"a":' * 100_000 + "1" + "}" * 100_000, "nested deeper than 64 levels"),
    ('[' * 70 + ']' * 70, "nested deeper than 64 levels"),
    ('{"format": "vlfront-bundle", "schema_version": ' + "9" * 5000 + "}", "not valid JSON"),
    ('{"format": "vlfront-bundle", "x": NaN}', "not valid JSON"),
    ('{"format": "vlfront-bundle", "schema_version": 1, "x": Infinity}', "not valid JSON"),
])
def test_hostile_json_is_refused(bundle_dir, text, needle):
    (bundle_dir / "manifest.json").write_text(text)
    with pytest.raises(BundleError, match=needle):
        Bundle.open(bundle_dir)


def test_unknown_keys_are_allowed(bundle_dir, manifest):
    m = copy.deepcopy(manifest)
    m["future_section"] = {"anything": [1, 2]}
    m["tokenizer"]["new_field"] = 3
    m["graphs"]["fusion"]["fp32"]["note"] = "x"
    (bundle_dir / "manifest.json").write_text(json.dumps(m))
    assert Bundle.open(bundle_dir).config.hidden_size == 64


# -- property: random mutations of a real manifest -> a Bundle or a BundleError ------------

_values = st.one_of(st.none(), st.booleans(), st.integers(-3, 10**6), st.floats(allow_nan=False),
                    st.text(max_size=8), st.lists(st.integers(0, 300), max_size=4),
                    st.builds(dict), st.builds(list))  # fresh objects: a shared {} could be put inside itself


def _paths(node, prefix=()):
    yield prefix
    if isinstance(node, dict):
        for k, v in node.items():
            yield from _paths(v, prefix + (k,))
    elif isinstance(node, list):
        for i, v in enumerate(node):
            yield from _paths(v, prefix + (i,))


@settings(max_examples=int(os.environ.get("VLFRONT_FUZZ_EXAMPLES", "250")), deadline=None, database=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_mutated_manifest_raises_only_bundle_errors(bundle_dir, manifest, data):
    m = copy.deepcopy(manifest)
    paths = [p for p in _paths(m) if p and p[0] not in ("parity", "tools", "sources", "special_tokens")]
    for _ in range(data.draw(st.integers(1, 3))):
        path = data.draw(st.sampled_from(paths))
        node = m
        try:
            for p in path[:-1]:
                node = node[p]
            if data.draw(st.booleans()) and isinstance(node, dict):
                node.pop(path[-1], None)
            else:
                node[path[-1]] = data.draw(_values)
        except (KeyError, IndexError, TypeError):
            continue  # an earlier mutation removed or replaced this path
    (bundle_dir / "manifest.json").write_text(json.dumps(m))
    try:
        Bundle.open(bundle_dir)
    except BundleError:
        pass
