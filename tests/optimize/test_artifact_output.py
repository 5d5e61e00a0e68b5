"""The outputs artifacts return are the ModelOutputs transformers' own constructors build."""

from __future__ import annotations

import pickle

import pytest
import torch
from transformers.modeling_outputs import BaseModelOutput, SequenceClassifierOutput

from ember.optimize.artifact import wrap_output


@pytest.mark.parametrize(("output", "cls", "others"), [
    ("last_hidden_state", BaseModelOutput, ("hidden_states", "attentions")),
    ("logits", SequenceClassifierOutput, ("loss", "hidden_states", "attentions")),
])
def test_wrap_output_matches_the_constructor(output, cls, others):
    t = torch.randn(2, 5, 3)
    fast, slow = wrap_output(output, t), cls(**{output: t})
    assert type(fast) is cls
    assert getattr(fast, output) is t
    assert all(getattr(fast, name) is None for name in others)
    assert list(fast.keys()) == list(slow.keys()) == [output]
    assert fast[output] is t and fast[0] is t
    assert fast.to_tuple() == slow.to_tuple()
    assert dict(fast) == dict(slow)
    again = pickle.loads(pickle.dumps(fast))
    assert type(again) is cls and torch.equal(getattr(again, output), t) and list(again.keys()) == [output]
    # a field set afterwards joins the keys, as on a constructed output
    fast.hidden_states = (t,)
    assert list(fast.keys()) == [output, "hidden_states"]


def test_wrap_output_flattens_like_the_constructor():
    """torch's pytree (used by DDP and torch.compile) sees the same leaves."""
    from torch.utils._pytree import tree_flatten

    t = torch.randn(1, 2, 3)
    leaves, _ = tree_flatten(wrap_output("last_hidden_state", t))
    assert len(leaves) == 1 and leaves[0] is t


def test_arguments_the_engine_cannot_honour_are_refused_not_dropped(tokenizer):
    """output_hidden_states=True came back with hidden_states=None, labels without a loss: silently."""
    from ember.errors import DataError
    from ember.optimize import OnnxRuntimeConfig, optimize

    from conftest import make_model

    art = optimize(make_model("bert"), OnnxRuntimeConfig(threads=1), tokenizer=tokenizer, sample=["play music", "hi"])
    enc = dict(tokenizer(["play some music"], return_tensors="pt"))
    plain = art(**enc)[0]
    # what pipelines and sentence-transformers pass is accepted
    same = art(**enc, return_dict=True, output_hidden_states=False, output_attentions=None, use_cache=False)
    assert torch.equal(same[0], plain)
    for extra, names in (({"output_hidden_states": True}, "output_hidden_states="),
                         ({"labels": torch.tensor([1]), "position_ids": torch.arange(4)[None]}, "labels=, position_ids=")):
        with pytest.raises(DataError, match=f"returns {art.facts.output} only; {names} would ask the model"):
            art(**enc, **extra)
