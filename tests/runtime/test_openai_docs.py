"""docs/openai.md shows runtime/openai_fields.json as it is (the table between its markers)."""

import pathlib

from vlfront.runtime import openai_compat

DOC = pathlib.Path(__file__).resolve().parents[2] / "docs" / "openai.md"


def test_docs_table_is_the_json_table():
    text = DOC.read_text(encoding="utf-8")
    begin, end = "<!-- openai-fields:begin -->\n", "<!-- openai-fields:end -->"
    table = text[text.index(begin) + len(begin):text.index(end)]
    assert table == openai_compat.markdown_tables(), "regenerate with: python -m vlfront.runtime.openai_compat"


def test_every_row_has_a_reason():
    for section in openai_compat.FIELDS.values():
        if isinstance(section, dict):
            for rows in section.values():
                assert all(isinstance(why, str) and why for why in rows.values())
