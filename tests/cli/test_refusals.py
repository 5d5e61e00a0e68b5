"""Command-line refusals that come before any work: an output that cannot be written, a store in a cache's place."""

from __future__ import annotations

import pytest
from typer.testing import CliRunner

from ember.cli import app

from conftest import make_model

runner = CliRunner()


@pytest.fixture
def filled(tmp_path, tokenizer):
    model_dir = tmp_path / "model"
    make_model("bert-base").save_pretrained(model_dir)
    tokenizer.save_pretrained(model_dir)
    (tmp_path / "d.csv").write_text("text,label\nplay music,a\nset alarm,b\norder pizza,a\ncall mom,b\n")
    r = runner.invoke(app, ["recycle", "fill", "--model", str(model_dir), "--data", str(tmp_path / "d.csv"),
                            "--store", str(tmp_path / "store"), "--layer", "2"])
    assert r.exit_code == 0, r.output
    return tmp_path, model_dir


def test_recycle_train_refuses_an_out_folder_it_cannot_write_before_training(filled, monkeypatch):
    """Was: every epoch trained, then the save failed."""
    import ember.recycle

    tmp, model_dir = filled
    (tmp / "taken").write_text("a file where the folder should go")
    monkeypatch.setattr(ember.recycle, "train_top", lambda *a, **k: pytest.fail("trained before checking --out"))
    r = runner.invoke(app, ["recycle", "train", "--model", str(model_dir), "--store", str(tmp / "store"),
                            "--out", str(tmp / "taken")])
    assert r.exit_code == 2 and "cannot write the trained model to" in r.output and "Nothing was run" in r.output


def test_cache_fill_refuses_a_save_dir_that_is_a_recycling_store(filled):
    """Was: the cache wrote its own folders inside the recycling store."""
    tmp, model_dir = filled
    r = runner.invoke(app, ["cache", "fill", "--data", str(tmp / "d.csv"), "--model", str(model_dir),
                            "--save-dir", str(tmp / "store")])
    assert r.exit_code == 2, r.output
    assert "is itself a lmdb store (it holds data.mdb: a recycling store, say), so it cannot be the save_dir" in r.output
    assert sorted(p.name for p in (tmp / "store").iterdir()) == ["data.mdb", "lock.mdb", "writer.lock"]
