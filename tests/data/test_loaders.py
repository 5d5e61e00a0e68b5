from __future__ import annotations

import json
from pathlib import Path

import pytest

from ember.data import Examples, load_examples
from ember.errors import DataError

from conftest import bad_sources

CLINC = Path(__file__).resolve().parents[2] / ".." / "shared" / "data" / "clinc150"


def test_csv_and_tsv(tmp_path):
    (tmp_path / "a.csv").write_text('text,label\n"hello, world",pos\nbad day,neg\n')
    ex = load_examples(tmp_path / "a.csv")
    assert ex.texts == ["hello, world", "bad day"] and ex.labels == ["pos", "neg"]
    assert ex.label_ids() == [1, 0]
    (tmp_path / "b.tsv").write_text('sentence\tlabel\nit \'s "fine" \t1\nno \t0\n')
    ex = load_examples(tmp_path / "b.tsv")
    assert ex.texts[0] == 'it \'s "fine" ' and ex.labels == [1, 0]


def test_custom_columns_and_missing_column(tmp_path):
    (tmp_path / "a.csv").write_text("body,y\nhi,1\n")
    assert load_examples(tmp_path / "a.csv", text_column="body", label_column="y").labels == [1]
    with pytest.raises(DataError, match=r"has no text column .* its columns are \['body', 'y'\]\. Pass the right name: text_column='NAME'\.$"):
        load_examples(tmp_path / "a.csv")
    with pytest.raises(DataError, match=r"has no label column 'lab'.* Pass the right name: label_column='NAME'\.$"):
        load_examples(tmp_path / "a.csv", text_column="body", label_column="lab")


def test_jsonl(tmp_path):
    (tmp_path / "a.jsonl").write_text(json.dumps({"text": "x", "intent": "greet"}) + "\n\n" + json.dumps({"text": "y", "intent": "bye"}) + "\n")
    ex = load_examples(tmp_path / "a.jsonl")
    assert ex.texts == ["x", "y"] and ex.labels == ["greet", "bye"]
    (tmp_path / "b.jsonl").write_text("{bad\n")
    with pytest.raises(DataError, match="line 1 is not valid JSON"):
        load_examples(tmp_path / "b.jsonl")


def test_clinc_style_json_and_splits(tmp_path):
    (tmp_path / "c.json").write_text(json.dumps({"train": [["hi", "greet"]], "test": [["bye", "leave"], ["yo", "greet"]]}))
    assert load_examples(tmp_path / "c.json").texts == ["hi"]
    assert load_examples(tmp_path / "c.json", split="test").labels == ["leave", "greet"]
    with pytest.raises(DataError, match=r"has no split 'dev'; it has \['test', 'train'\]"):
        load_examples(tmp_path / "c.json", split="dev")


@pytest.mark.skipif(not CLINC.exists(), reason="shared CLINC150 data not present")
def test_real_clinc150_folder():
    ex = load_examples(CLINC, split="test")
    assert len(ex) == 4500 and len(ex.label_names()) == 150


def test_saved_hf_dataset(tmp_path):
    datasets = pytest.importorskip("datasets")
    ds = datasets.Dataset.from_dict({"sentence": ["a b", "c"], "label": [0, 1]})
    datasets.DatasetDict({"train": ds}).save_to_disk(str(tmp_path / "ds"))
    ex = load_examples(tmp_path / "ds")
    assert ex.texts == ["a b", "c"] and ex.labels == [0, 1]


def test_txt_one_unlabelled_text_per_line(tmp_path):
    (tmp_path / "t.txt").write_text("book a flight\n\n  \nwhat time is it?\n", encoding="utf-8")
    ex = load_examples(tmp_path / "t.txt")
    assert ex.texts == ["book a flight", "what time is it?"] and ex.labels is None
    (tmp_path / "blank.txt").write_text("\n \n")
    with pytest.raises(DataError, match="holds no examples"):
        load_examples(tmp_path / "blank.txt")


def test_empty_and_unknown(tmp_path):
    (tmp_path / "e.csv").write_text("text,label\n")
    with pytest.raises(DataError, match="holds no examples"):
        load_examples(tmp_path / "e.csv")
    with pytest.raises(DataError, match="does not exist"):
        load_examples(tmp_path / "nope.csv")
    (tmp_path / "x.parquet").write_text("")
    with pytest.raises(DataError, match="unknown file type"):
        load_examples(tmp_path / "x.parquet")


def test_unknown_labels_named():
    with pytest.raises(DataError, match=r"labels \['zzz'\] .* not among the model's 2 labels"):
        Examples(["a", "b"], ["pos", "zzz"]).label_ids(["neg", "pos"])


@pytest.mark.parametrize(
    ("split", "shown"),
    [("", "str ''"), (["train"], "list ['train']"), (3, "int 3"), (b"train", "bytes b'train'")],
)
def test_a_split_that_is_not_a_name_is_refused_with_the_splits_there_are(tmp_path, split, shown):
    """'' read the train split silently and a list failed in a dict lookup; a file without splits refuses the
    type too (None stays the documented default, train)."""
    (tmp_path / "c.json").write_text(json.dumps({"train": [["hi", "greet"]], "test": [["bye", "leave"]]}))
    with pytest.raises(DataError) as caught:
        load_examples(tmp_path / "c.json", split=split)
    assert str(caught.value) == (
        f"split must be a split name (a non-empty str, or None for 'train'), got {shown} for {tmp_path / 'c.json'}; "
        "it has ['test', 'train']. Pass split='NAME'."
    )
    (tmp_path / "a.csv").write_text("text,label\nhi,greet\n")
    with pytest.raises(DataError) as caught:
        load_examples(tmp_path / "a.csv", split=split)
    assert f"got {shown} for {tmp_path / 'a.csv'}. Pass split='NAME'." in str(caught.value)
    assert load_examples(tmp_path / "c.json", split=None).texts == ["hi"]


def test_a_saved_dataset_dict_refuses_a_split_it_lacks(tmp_path):
    datasets = pytest.importorskip("datasets")
    ds = datasets.Dataset.from_dict({"sentence": ["a b"], "label": [0]})
    datasets.DatasetDict({"train": ds, "validation": ds}).save_to_disk(str(tmp_path / "ds"))
    with pytest.raises(DataError, match=r"has no split 'test'; it has \['train', 'validation'\]\. Pass split='NAME'\.$"):
        load_examples(tmp_path / "ds", split="test")
    with pytest.raises(DataError, match=r"got str '' for .*; it has \['train', 'validation'\]"):
        load_examples(tmp_path / "ds", split="")


def test_messages_name_the_python_argument_not_the_command_line_flag(tmp_path):
    """They said 'Pass --split NAME' / '--text-column' to Python users; the command line rewords them
    (tests/cli/test_cli_wording.py)."""
    for source, kwargs in bad_sources(tmp_path):
        with pytest.raises(DataError) as caught:
            load_examples(source, **kwargs)
        message = str(caught.value)
        assert "--" not in message, message
        assert any(f"{arg}=" in message for arg in ("split", "text_column", "label_column")), message
