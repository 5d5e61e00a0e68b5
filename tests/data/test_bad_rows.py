"""Rows that used to give a traceback or a silent oddity: each is an ember error naming the row and the fix."""

from __future__ import annotations

import json

import pytest

from ember.data import load_examples
from ember.errors import DataError


def test_a_csv_field_over_the_field_limit_names_the_line_and_the_likely_cause(tmp_path):
    """Was: _csv.Error: field larger than field limit (131072)."""
    f = tmp_path / "d.csv"
    f.write_text("text,label\nfine,a\n" + '"' + "x" * 140_000 + '",b\n')
    with pytest.raises(DataError, match=r"d\.csv line 3: a field is longer than 131,072 characters, .* a double quote that "
                       r"is never closed"):
        load_examples(f)


def test_a_jsonl_row_without_the_label_key_names_the_row(tmp_path):
    """Was: KeyError: 'label'."""
    f = tmp_path / "d.jsonl"
    f.write_text(json.dumps({"text": "a", "label": "x"}) + "\n" + json.dumps({"text": "b"}) + "\n")
    with pytest.raises(DataError, match=r"d\.jsonl row 1 has no 'label' key while other rows have labels there; give the "
                       r"row its label, or drop it"):
        load_examples(f)
    f.write_text(json.dumps({"text": "a", "label": "x"}) + "\n" + json.dumps({"label": "y"}) + "\n")
    with pytest.raises(DataError, match=r"row 1 has no 'text' key"):
        load_examples(f)
    f.write_text('["a list"]\n')
    with pytest.raises(DataError, match=r"line 1 is a JSON list, not an object"):
        load_examples(f)


@pytest.mark.parametrize(
    "name, content",
    [("d.csv", "text,label\nhi,a\nyo,NaN\n"), ("d.csv", "text,label\nhi,a\nyo,nan\n"),
     ("d.jsonl", '{"text": "hi", "label": "a"}\n{"text": "yo", "label": NaN}\n')],
)
def test_a_nan_label_is_refused_like_an_empty_one(tmp_path, name, content):
    """Was: NaN became a class of its own, 'nan', while empty and null labels were refused."""
    (tmp_path / name).write_text(content)
    with pytest.raises(DataError, match=r"row 1 has the label NaN \(a missing value, not a class\); drop the row or give it a label"):
        load_examples(tmp_path / name)
