"""Malformed tokenizer.json files are refused by the C++ tokenizer with our error, never a bare
nlohmann::json exception (the mutations the Python property tests found, on the real vocabulary)."""

from __future__ import annotations

import json
import subprocess

import pytest

CASES = {
    "added_tokens_strings": (lambda d: d.update(added_tokens=["x"]), "added_tokens must be a list of"),
    "added_content_list": (lambda d: d["added_tokens"][0].update(content=[]), "added_tokens must be a list of"),
    "added_id_string": (lambda d: d["added_tokens"][0].update(id="5"), "added_tokens must be a list of"),
    "split_pattern_int": (lambda d: d["pre_tokenizer"]["pretokenizers"][0].update(pattern={"Regex": 5}),
                          'pre_tokenizer Split needs a pattern {"Regex": string}'),
    "vocab_id_float": (lambda d: d["model"]["vocab"].update({"a": 1.5}), "has id 1.5 outside"),
}


@pytest.fixture(scope="module")
def doc(tokenizer_json) -> dict:
    return json.loads(tokenizer_json.read_text())


@pytest.mark.parametrize("name", sorted(CASES))
def test_malformed_tokenizer_json_is_our_error(cpp_tokenize_bin, doc, tmp_path, name):
    edit, needle = CASES[name]
    d = json.loads(json.dumps(doc))
    edit(d)
    path = tmp_path / "tokenizer.json"
    path.write_text(json.dumps(d))
    proc = subprocess.run([str(cpp_tokenize_bin), str(path)], input=b'"hi"\n', capture_output=True, timeout=120)
    err = proc.stderr.decode()
    assert proc.returncode == 1 and f"tokenizer {path}: " in err and needle in err, err
    assert "json.exception" not in err
