"""An artifact after save/load, saved again, saved among other files, and called with unusual inputs."""

from __future__ import annotations

import pytest
import torch

from ember.optimize import BF16Config, Int8DynamicConfig, load, optimize

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
