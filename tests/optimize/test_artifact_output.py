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
