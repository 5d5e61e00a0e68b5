"""The recycle CLI end to end on a tiny model saved to disk."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from ember.cli import app

from conftest import make_model

runner = CliRunner()


@pytest.fixture
def setup(tmp_path, tokenizer):
    model_dir = tmp_path / "model"
    make_model("bert-base").save_pretrained(model_dir)
    tokenizer.save_pretrained(model_dir)
    rows = ["text,label"] + [f"{t},{lab}" for t, lab in [("play music", "a"), ("set alarm", "b"), ("order pizza", "a"), ("call mom", "b")] * 3]
    (tmp_path / "d.csv").write_text("\n".join(rows) + "\n")
    return tmp_path, model_dir


def last_json(output: str) -> dict:
    return json.loads(output.strip().splitlines()[-1])


def test_fill_train_eval(setup):
    tmp, model_dir = setup
    store, out = tmp / "store", tmp / "trained"
    r = runner.invoke(app, ["recycle", "fill", "--model", str(model_dir), "--data", str(tmp / "d.csv"), "--store", str(store), "--layer", "2", "--json"])
    assert r.exit_code == 0, r.output
    assert last_json(r.stdout)["computed"] == 4  # 12 rows, 4 distinct texts
    r = runner.invoke(app, ["recycle", "fill", "--model", str(model_dir), "--data", str(tmp / "d.csv"), "--store", str(store), "--layer", "2", "--json"])
    assert last_json(r.stdout)["computed"] == 0 and last_json(r.stdout)["already_stored"] == 4
    # layer, dtype and max length come from the store's fingerprint
    r = runner.invoke(app, ["recycle", "train", "--model", str(model_dir), "--store", str(store), "--epochs", "30",
                            "--lr", "3e-3", "--batch-size", "4", "--out", str(out), "--json"])
    assert r.exit_code == 0, r.output
    assert len(last_json(r.stdout)["epoch_seconds"]) == 30 and last_json(r.stdout)["examples"] == 12
    assert (out / "config.json").exists()
    r = runner.invoke(app, ["recycle", "eval", "--model", str(out), "--data", str(tmp / "d.csv"), "--store", str(store), "--json"])
    assert r.exit_code == 0, r.output
    # a separable set: fill -> train -> eval must agree on every label id
    assert last_json(r.stdout)["accuracy"] == 1.0 and last_json(r.stdout)["examples"] == 12
    # without --store, eval reads the store train recorded beside the model
    r = runner.invoke(app, ["recycle", "eval", "--model", str(out), "--data", str(tmp / "d.csv"), "--json"])
    assert r.exit_code == 0, r.output
    assert last_json(r.stdout)["accuracy"] == 1.0
    r = runner.invoke(app, ["recycle", "eval", "--model", str(model_dir), "--data", str(tmp / "d.csv")])
    assert r.exit_code == 2 and "pass --store" in r.output and "has no ember-recycle.json" in r.output


def test_errors_are_clean(setup):
    tmp, model_dir = setup
    store = tmp / "store"
    r = runner.invoke(app, ["recycle", "train", "--model", str(model_dir), "--store", str(store), "--out", str(tmp / "o")])
    assert r.exit_code == 2 and "has not been filled yet" in r.output
    runner.invoke(app, ["recycle", "fill", "--model", str(model_dir), "--data", str(tmp / "d.csv"), "--store", str(store), "--layer", "2"])
    r = runner.invoke(app, ["recycle", "fill", "--model", str(model_dir), "--data", str(tmp / "d.csv"), "--store", str(store), "--layer", "1"])
    assert r.exit_code == 2 and "layer: store has 2, this run has 1" in r.output
    r = runner.invoke(app, ["recycle", "train", "--model", str(model_dir), "--store", str(store), "--split", "dev", "--out", str(tmp / "o")])
    assert r.exit_code == 2 and "has no split 'dev'" in r.output and "ember recycle fill --split dev" in r.output


def test_a_leveldb_store_is_found_by_eval_and_backends_are_not_mixed(setup):
    """train records the backend beside the model (eval used to look for an LMDB store and call the LevelDB
    one unfilled); a folder holding one backend's store is refused to the other (it used to start a second,
    empty store beside the first and recompute everything)."""
    pytest.importorskip("plyvel")
    tmp, model_dir = setup
    store, out, data = tmp / "lv", tmp / "trained", str(tmp / "d.csv")
    common = ["--model", str(model_dir), "--data", data, "--store", str(store), "--layer", "2"]
    assert runner.invoke(app, ["recycle", "fill", *common, "--backend", "leveldb"]).exit_code == 0
    r = runner.invoke(app, ["recycle", "train", "--model", str(model_dir), "--store", str(store), "--backend", "leveldb",
                            "--epochs", "1", "--out", str(out)])
    assert r.exit_code == 0, r.output
    r = runner.invoke(app, ["recycle", "eval", "--model", str(out), "--data", data, "--json"])
    assert r.exit_code == 0, r.output
    r = runner.invoke(app, ["recycle", "fill", *common])  # lmdb, the default
    assert r.exit_code == 2 and "holds a leveldb store, not a lmdb one; open it with backend='leveldb' (CLI: --backend leveldb)" in " ".join(r.output.split())
    assert not (store / "data.mdb").exists()


def test_common_path_and_number_mistakes_exit_cleanly(setup):
    tmp, model_dir = setup
    (tmp / "afile").write_text("x")
    data = str(tmp / "d.csv")
    cases = [
        (["recycle", "fill", "--model", str(tmp / "nope"), "--data", data, "--store", str(tmp / "s")], "model folder"),
        (["recycle", "fill", "--model", str(model_dir), "--data", data, "--store", str(tmp / "afile")], "is a file, not a store folder"),
        (["recycle", "fill", "--model", str(model_dir), "--data", data, "--store", str(tmp / "s"), "--limit", "-2"], "limit must be >= 0"),
    ]
    for args, message in cases:
        r = runner.invoke(app, args)
        assert r.exit_code == 2 and message in " ".join(r.output.split()), (args, r.output)
    runner.invoke(app, ["recycle", "fill", "--model", str(model_dir), "--data", data, "--store", str(tmp / "s"), "--layer", "2"])
    r = runner.invoke(app, ["recycle", "train", "--model", str(model_dir), "--store", str(tmp / "s"), "--batch-size", "0", "--out", str(tmp / "o")])
    assert r.exit_code == 2 and "batch_size must be >= 1, got 0" in r.output
    r = runner.invoke(app, ["recycle", "train", "--model", str(model_dir), "--store", str(tmp / "s"), "--out", str(tmp / "afile")])
    assert r.exit_code == 2 and "error:" in r.output and "afile" in r.output  # pathlib's FileExistsError, as one line


def test_eval_warns_or_refuses_when_the_data_numbers_classes_differently(setup):
    """A model trained on names 'a'/'b' evaluated on data labelled 0/1 used to report an accuracy without a word."""
    tmp, model_dir = setup
    store, out = tmp / "store", tmp / "trained"
    runner.invoke(app, ["recycle", "fill", "--model", str(model_dir), "--data", str(tmp / "d.csv"), "--store", str(store), "--layer", "2"])
    r = runner.invoke(app, ["recycle", "train", "--model", str(model_dir), "--store", str(store), "--epochs", "1", "--out", str(out)])
    assert r.exit_code == 0, r.output
    (tmp / "ids.csv").write_text("text,label\nplay music,0\nset alarm,1\n")
    r = runner.invoke(app, ["recycle", "eval", "--model", str(out), "--data", str(tmp / "ids.csv"), "--json"])
    assert r.exit_code == 0, r.output
    assert ("warning: the evaluation labels are class ids, but the model was trained on named classes (0='a', 1='b'): "
            "each id is compared with the class at that position") in " ".join(r.output.split())
    assert "EmberWarning" not in r.output and "accuracy" in r.stdout
    (tmp / "ids.csv").write_text("text,label\nplay music,0\nset alarm,5\n")
    r = runner.invoke(app, ["recycle", "eval", "--model", str(out), "--data", str(tmp / "ids.csv")])
    assert r.exit_code == 2
    assert "error: label id 5 in the evaluation data is past the model's head, which has 2 outputs (ids 0..1)" in " ".join(r.output.split())
