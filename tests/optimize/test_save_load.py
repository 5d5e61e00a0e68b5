"""An artifact after save/load, saved again, saved among other files, and called with unusual inputs."""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import shutil
import subprocess
import sys

import pytest
import torch

from ember.errors import ArtifactError, DataError
from ember.fidelity import Tolerance
from ember.optimize import BF16Config, Int8DynamicConfig, OnnxRuntimeConfig, OpenVINOConfig, load, optimize

from conftest import TEXTS, make_model

pytestmark = pytest.mark.filterwarnings("ignore")


@pytest.mark.parametrize("family, config", [
    ("bert", BF16Config()),
    ("bert", Int8DynamicConfig()),
    ("bert-base", BF16Config()),
])
def test_a_torch_artifact_reloads_as_the_class_it_was_built_from(family, config, tokenizer, tmp_path):
    # fine-tuning starts from a base checkpoint whose config names its pretraining head
    # (bert-base-uncased: BertForMaskedLM); the model is a classifier or a bare encoder all the same
    model = make_model(family)
    model.config.architectures = ["BertForMaskedLM"]
    art = optimize(model, config, tokenizer=tokenizer, sample=list(TEXTS))
    back = load(art.save(tmp_path / "a"))
    assert type(back.model).__name__ == type(model).__name__
    x = tokenizer(list(TEXTS), padding=True, return_tensors="pt")
    field = back.facts.output
    torch.testing.assert_close(getattr(back(**x), field), getattr(art(**x), field))


# ---- saving into a folder that holds other things ------------------------------------------------

@pytest.fixture(scope="module")
def onnx_art(tokenizer):
    return optimize(make_model("bert"), OnnxRuntimeConfig(threads=1), tokenizer=tokenizer, sample=list(TEXTS))


def test_the_manifest_lists_only_the_files_the_artifact_wrote(onnx_art, tmp_path):
    # saved beside the original checkpoint, say: those files are not the artifact's, and editing them later
    # made the artifact refuse to load as "corrupted"
    (tmp_path / "notes.txt").write_text("fine-tuned on the March data")
    onnx_art.save(tmp_path)
    assert set(json.loads((tmp_path / "ember-artifact.json").read_text())["files"]) == {
        "model.onnx", "tokenizer/tokenizer.json", "tokenizer/tokenizer_config.json"}
    (tmp_path / "notes.txt").write_text("fine-tuned on the April data")
    assert load(tmp_path).tokenizer is not None
    assert (tmp_path / "notes.txt").read_text() == "fine-tuned on the April data"
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".ember")] == []  # no staging folder left


def test_saving_over_another_artifact_leaves_nothing_of_it(onnx_art, tokenizer, tmp_path):
    torch_art = optimize(make_model("bert"), BF16Config(), tokenizer=tokenizer, sample=list(TEXTS))
    torch_art.save(tmp_path)
    assert (tmp_path / "hf").is_dir()
    bare = load(tmp_path)
    bare.tokenizer = None  # e.g. an artifact whose tokenizer the caller keeps elsewhere
    onnx_art.tokenizer, kept = None, onnx_art.tokenizer
    try:
        onnx_art.save(tmp_path)
    finally:
        onnx_art.tokenizer = kept
    assert not (tmp_path / "hf").exists() and not (tmp_path / "tokenizer").exists()
    back = load(tmp_path)
    # the earlier artifact's tokenizer was left in the folder, hashed into the new manifest and loaded with it
    assert back.tokenizer is None and type(back).__name__ == "OnnxArtifact"


def test_saving_twice_into_the_same_folder_gives_the_same_artifact(onnx_art, tmp_path):
    onnx_art.save(tmp_path)
    first = json.loads((tmp_path / "ember-artifact.json").read_text())
    onnx_art.save(tmp_path)
    assert json.loads((tmp_path / "ember-artifact.json").read_text()) == first


_SAVE_OVER_ITSELF = """
import sys, torch
from ember.optimize import load
art = load(sys.argv[1])
x = {"input_ids": torch.tensor([[2, 10, 20, 3]]), "attention_mask": torch.ones(1, 4, dtype=torch.long)}
before = art(**x).logits
art.save(sys.argv[1])  # back into the folder it was loaded from (its weights are mapped from there)
print("same", torch.equal(art(**x).logits, before), torch.allclose(load(sys.argv[1])(**x).logits, before), flush=True)
"""


def test_an_openvino_artifact_saved_back_into_the_folder_it_was_loaded_from_keeps_running(tokenizer, tmp_path):
    pytest.importorskip("openvino")
    d = optimize(make_model("bert"), OpenVINOConfig(threads=1), tokenizer=tokenizer, sample=list(TEXTS)).save(tmp_path)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in sys.path if p)}
    run = subprocess.run([sys.executable, "-c", _SAVE_OVER_ITSELF, str(d)], capture_output=True, text=True, env=env,
                         timeout=300)
    assert run.returncode == 0, f"rc={run.returncode} (135: SIGBUS) stderr={run.stderr[-2000:]!r}"
    assert run.stdout.split()[-3:] == ["same", "True", "True"]


# ---- the artifact always answers as in evaluation -------------------------------------------------

@pytest.mark.parametrize("config", [BF16Config(), Int8DynamicConfig()], ids=["bf16", "int8"])
def test_a_torch_artifact_answers_without_dropout_whatever_mode_its_model_is_in(config, tokenizer):
    model = make_model("bert", hidden_dropout_prob=0.5, attention_probs_dropout_prob=0.5)
    art = optimize(model, config, tokenizer=tokenizer, sample=list(TEXTS))
    x = tokenizer(list(TEXTS), padding=True, return_tensors="pt")
    expected = art(**x).logits
    model.train()  # training goes on (bf16 autocast runs this very model)
    art.train()  # or something calls .train() on every module it holds
    for _ in range(3):
        torch.testing.assert_close(art(**x).logits, expected)
    assert model.training and all(m.training for m in art.model.modules())  # the modes are left as they were


def test_optimize_leaves_the_model_in_the_mode_it_was_in(tokenizer):
    model = make_model("bert", hidden_dropout_prob=0.5)
    model.train()
    model.bert.embeddings.eval()  # a mix, as a training loop with frozen parts leaves it
    modes = [m.training for m in model.modules()]
    with pytest.warns(UserWarning, match="changed the model's answers") as caught:
        art = optimize(model, BF16Config(tolerance=Tolerance(min_mean_cosine=1.0), on_violation="warn"),
                       tokenizer=tokenizer, sample=list(TEXTS))
    assert [m.training for m in model.modules()] == modes
    assert caught[0].filename == __file__  # the warning points at the caller's line
    assert art.fidelity.mean_cosine > 0.999  # verified in eval mode all the same


# ---- unusual but valid inputs --------------------------------------------------------------------

@pytest.fixture(scope="module")
def artifacts(onnx_art, tokenizer):
    out = {"onnx": onnx_art, "bf16": optimize(make_model("bert"), BF16Config(), tokenizer=tokenizer, sample=list(TEXTS))}
    if importlib.util.find_spec("openvino") is not None:
        out["openvino"] = optimize(make_model("bert"), OpenVINOConfig(threads=1), tokenizer=tokenizer, sample=list(TEXTS))
    return out


@pytest.mark.parametrize("name", ["onnx", "openvino", "bf16"])
@pytest.mark.parametrize("convert", [lambda t: t.tolist(), lambda t: t.numpy(), lambda t: t.int()],
                         ids=["lists", "numpy", "int32"])
def test_every_input_may_be_a_list_or_an_array_as_input_ids_may(artifacts, name, convert, tokenizer):
    if name not in artifacts:
        pytest.skip("openvino is not installed")
    art = artifacts[name]
    x = tokenizer(list(TEXTS), padding=True, return_tensors="pt")
    got = art(**{k: convert(v) for k, v in x.items()}).logits  # was: AttributeError 'list' object has no attribute
    torch.testing.assert_close(got, art(**x).logits)


@pytest.mark.parametrize("name", ["onnx", "openvino", "bf16"])
@pytest.mark.parametrize("key, cut", [("attention_mask", lambda t: t[:1]), ("attention_mask", lambda t: t[:, :-1]),
                                      ("token_type_ids", lambda t: t[:1])], ids=["mask-one-row", "mask-short", "types-one-row"])
def test_an_input_of_another_shape_than_input_ids_is_refused_naming_the_fix(artifacts, name, key, cut, tokenizer):
    if name not in artifacts:
        pytest.skip("openvino is not installed")
    x = tokenizer(list(TEXTS), padding=True, return_tensors="pt")
    with pytest.raises(DataError, match=rf"{key} has shape .* but input_ids \({len(TEXTS)}, .*return_tensors='pt'"):
        artifacts[name](**{**x, key: cut(x[key])})


def test_a_saved_tokenizer_that_cannot_be_read_names_a_fix_that_works(onnx_art, tokenizer, tmp_path):
    d = onnx_art.save(tmp_path / "a")
    # a tokenizer this transformers cannot read, recorded as saved (a newer release's format, say)
    (d / "tokenizer" / "tokenizer_config.json").write_text("{not json")
    m = json.loads((d / "ember-artifact.json").read_text())
    m["files"]["tokenizer/tokenizer_config.json"] = hashlib.sha256(b"{not json").hexdigest()
    (d / "ember-artifact.json").write_text(json.dumps(m))
    with pytest.raises(ArtifactError, match=r"cannot be read .* pass the model's own tokenizer: load\(directory, tokenizer=\.\.\.\)"):
        load(d)
    x = tokenizer(list(TEXTS), padding=True, return_tensors="pt")
    back = load(d, tokenizer=tokenizer)
    assert back.tokenizer is tokenizer
    torch.testing.assert_close(back(**x).logits, onnx_art(**x).logits)
    shutil.rmtree(d / "tokenizer")  # the old advice ("delete the folder") then failed: "tokenizer/... is missing"
    assert load(d, tokenizer=tokenizer).encode(["play music"]).shape == (1, 3)
    with pytest.raises(ArtifactError, match=r"tokenizer/.* is missing; .* or pass the model's own tokenizer: load\(directory, tokenizer="):
        load(d)  # without one, the saved tokenizer is still required
