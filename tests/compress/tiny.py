"""Tiny teachers built in code: a random classifier, the conftest WordPiece tokenizer, a filled memory store."""

from __future__ import annotations

import pytest
import torch

from conftest import TEXTS, make_model


def labelled(n_repeat: int = 3) -> tuple[list[str], list[int]]:
    """Each text with one label (the same every time it repeats)."""
    return list(TEXTS) * n_repeat, [i % 3 for i in range(len(TEXTS))] * n_repeat


def write_labelled_csv(path, n_repeat: int = 3):
    """:func:`labelled`'s examples as a ``text,label`` CSV with the class names a, b, c; returns ``path``."""
    import csv

    texts, labels = labelled(n_repeat)
    with path.open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["text", "label"])
        w.writerows(zip(texts, ["abc"[y] for y in labels], strict=True))
    return path


def tiny_teacher(family: str = "bert", vocab: int = 128, **overrides):
    """A 4-layer random classifier (3 labels) with named classes, like a fine-tuned teacher."""
    model = make_model(family, num_labels=3, vocab_size=vocab, **overrides)
    head = model.classifier.out_proj if hasattr(model.classifier, "out_proj") else model.classifier
    with torch.no_grad():
        head.weight.mul_(50.0)  # logits spread like a trained head's, not all ~0
    model.config.id2label = {0: "a", 1: "b", 2: "c"}
    model.config.label2id = {"a": 0, "b": 1, "c": 2}
    return model


def filled_teacher(tokenizer, family: str = "bert", hidden_layers: tuple[int, ...] = (4,), store=None, **overrides):
    """A Teacher over a store (memory by default) with split ``train`` filled."""
    from ember.compress import Teacher, TeacherConfig

    texts, labels = labelled()
    teacher = Teacher(tiny_teacher(family, **overrides), tokenizer, store, TeacherConfig(hidden_layers=hidden_layers))
    teacher.fill(texts, labels, progress=False)
    return teacher


@pytest.fixture(autouse=True)
def one_thread():
    """Tiny models train on one thread: with two, every op of a 32-wide model waits for the other thread, which
    on a shared 2-core machine under load made a 120-step test take minutes instead of a second."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
