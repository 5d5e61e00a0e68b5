"""Loading models: a mistyped folder is refused at once, pickled weights are an ember error."""

from __future__ import annotations

import os
import time

import pytest
import torch

from ember.errors import ModelFileError, ModelNotFoundError, OutputLocationError
from ember.models import load_model
from ember.models.load import check_model_location, check_output_dir

from conftest import make_model


class _RunsCode:
    def __reduce__(self):
        return (os.getcwd, ())


def test_a_relative_name_that_is_no_folder_is_refused_at_once(tmp_path, monkeypatch):
    """Was: ~50 s waiting for the hub (no internet) before the same failure."""
    monkeypatch.chdir(tmp_path)
    start = time.monotonic()
    with pytest.raises(ModelNotFoundError, match=r"model folder no_such_dir does not exist here, and a bare name is not a "
                       r"hub id \(hub models are named organisation/name"):
        load_model("no_such_dir")
    assert time.monotonic() - start < 30  # not a timing claim: the hub path took ~50 s
    for path in ("./nope", "a/b/c", "~/nope-ember"):
        with pytest.raises(FileNotFoundError, match="does not exist"):
            check_model_location(path)
    check_model_location("sentence-transformers/all-MiniLM-L6-v2")  # org/name: a hub id, asked of the hub


def test_pickled_weights_that_hold_more_than_tensors_are_an_ember_error(tmp_path, tokenizer):
    """Was: a raw UnpicklingError (safe: nothing ran, but not an ember error)."""
    make_model("bert-base").save_pretrained(tmp_path)
    tokenizer.save_pretrained(tmp_path)
    (tmp_path / "model.safetensors").unlink()
    torch.save({"x": _RunsCode()}, tmp_path / "pytorch_model.bin")
    with pytest.raises(ModelFileError, match=r"the weights of .* \(pytorch_model\.bin\) are a pickle that holds more than "
                       r"tensors .* Convert the checkpoint to safetensors"):
        load_model(tmp_path)


def test_an_output_folder_that_cannot_be_written_is_refused_before_work(tmp_path):
    (tmp_path / "file").write_text("")
    with pytest.raises(OutputLocationError, match=r"cannot write the trained model to .*file: it is a file, not a folder\. "
                       r"Nothing was run"):
        check_output_dir(tmp_path / "file")
    assert check_output_dir(tmp_path / "new" / "out").is_dir()


def test_the_hubs_old_bare_names_are_not_refused_as_folders():
    """``bert-base-uncased`` and the other old root-level hub names still reach the hub (they redirect to their
    organisation); a bare name the hub never had is refused at once as a missing folder."""
    from ember.errors import ModelNotFoundError
    from ember.models.load import check_model_location

    for name in ("bert-base-uncased", "roberta-base", "distilbert-base-uncased", "xlm-roberta-base"):
        check_model_location(name)  # no error: the loader asks the hub
    with pytest.raises(ModelNotFoundError, match="does not exist here"):
        check_model_location("bert-base-uncasedd")
