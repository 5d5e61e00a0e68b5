"""Data as users keep it: folders of split files, splits a source cannot honour, labels under another name."""

from __future__ import annotations

import json
import warnings

import pytest

from ember.data import Examples, load_examples
from ember.errors import DataError, EmberWarning


def test_a_folder_of_split_files_is_a_dataset_with_those_splits(tmp_path):
    """Was: refused (only a saved Hugging Face dataset or CLINC's data_full.json were folders ember read)."""
    (tmp_path / "train.csv").write_text("text,label\nplay music,a\nset alarm,b\n")
    (tmp_path / "test.csv").write_text("text,label\ncall mom,b\n")
    (tmp_path / "validation.jsonl").write_text(json.dumps({"text": "order pizza", "label": "a"}) + "\n")
    (tmp_path / "notes.csv").write_text("not,a split\n")
    assert load_examples(tmp_path).texts == ["play music", "set alarm"]  # the default split stays train
    test = load_examples(tmp_path, split="test")
    assert (test.texts, test.labels, test.split) == (["call mom"], ["b"], "test")
    assert load_examples(tmp_path, split="validation").texts == ["order pizza"]
    with pytest.raises(DataError, match=r"has no split 'dev'; it has \['test', 'train', 'validation'\]\. Pass split='NAME'\."):
        load_examples(tmp_path, split="dev")


def test_a_folder_with_two_files_for_one_split_is_refused(tmp_path):
    (tmp_path / "dev.tsv").write_text("sentence\tlabel\nhi\t1\n")
    (tmp_path / "dev.csv").write_text("text,label\nhi,1\n")
    with pytest.raises(DataError, match=r"has two files for split 'dev' \(dev\.csv and dev\.tsv\); keep one of them"):
        load_examples(tmp_path, split="dev")


def test_a_folder_that_is_no_dataset_says_what_was_looked_for(tmp_path):
    pytest.importorskip("datasets")
    (tmp_path / "readme.md").write_text("hi")
    with pytest.raises(DataError, match=r"is a folder, but not a dataset ember can read: it has no data_full\.json, no split files"):
        load_examples(tmp_path)


@pytest.mark.parametrize("suffix", [".csv", ".jsonl", ".txt"])
def test_a_split_a_single_file_cannot_honour_is_refused(tmp_path, suffix):
    """Was: split='test' was silently ignored, so benchmarks reported 'test accuracy' on the training rows."""
    f = tmp_path / f"d{suffix}"
    f.write_text({".csv": "text,label\nhi,a\n", ".jsonl": '{"text": "hi", "label": "a"}\n', ".txt": "hi\n"}[suffix])
    assert load_examples(f).texts == ["hi"] and load_examples(f, split="train").texts == ["hi"]  # the default stays
    with pytest.raises(DataError) as err:
        load_examples(f, split="test")
    assert str(err.value) == (
        f"{f} is a single {suffix[1:].upper()} file, which has no splits, so split 'test' cannot be honoured: reading "
        "the whole file instead would, say, evaluate on the training rows. Give no split to read the whole file; for "
        "splits, pass a folder holding one file per split (train.csv, test.csv ...) instead. Pass split='NAME' only "
        "with such a source."
    )


def test_a_label_column_under_another_name_is_named(tmp_path):
    """Was: the examples silently came back unlabelled, and commands that need labels failed later."""
    (tmp_path / "d.csv").write_text("text,category\nplay music,media\n")
    with pytest.warns(EmberWarning, match=r"has no label column .*its columns are \['text', 'category'\], so the examples are "
                      r"read without labels\. If 'category' holds the labels, name it: label_column='category' \(on the "
                      r"command line: --label-column category\)\."):
        ex = load_examples(tmp_path / "d.csv")
    assert ex.labels is None
    with pytest.raises(DataError) as err:
        ex.require_labels("training needs them")
    assert str(err.value) == (
        f"{tmp_path / 'd.csv'} has no labels (training needs them): no label column was found among its columns "
        "['text', 'category']. Pass the right name: label_column='NAME'."
    )
    assert load_examples(tmp_path / "d.csv", label_column="category").labels == ["media"]
    (tmp_path / "three.csv").write_text("text,id,category\nhi,1,x\n")
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # two other columns: no guess, no warning
        assert load_examples(tmp_path / "three.csv").labels is None


def test_examples_say_which_rows_they_hold(tmp_path):
    (tmp_path / "test.csv").write_text("text,label\n" + "".join(f"t{i},a\n" for i in range(10)))
    (tmp_path / "train.csv").write_text("text,label\nx,a\n")
    ex = load_examples(tmp_path, split="test", limit=4)
    assert ex.describe() == f"the first 4 of 10 rows of {tmp_path / 'test.csv'}"
    assert ex.provenance() == {"source": str(tmp_path / "test.csv"), "split": "test", "rows": 4, "of": 10,
                               "rows_used": ex.describe()}
    assert load_examples(tmp_path, split="test").describe() == f"all 10 rows of {tmp_path / 'test.csv'}"
    c = tmp_path / "c.json"
    c.write_text(json.dumps({"train": [["hi", "a"]], "test": [["bye", "b"], ["yo", "a"]]}))
    assert load_examples(c, split="test", limit=1).describe() == f"the first 1 of 2 rows of {c}:test"
    assert Examples(["a"], source="x.csv", split="dev").describe() == "all 1 rows of split 'dev' of x.csv"
