"""Tiny random encoders built from configs in code: no download, seconds to run."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from transformers import (
    BertConfig,
    BertForSequenceClassification,
    BertModel,
    BertTokenizerFast,
    DistilBertConfig,
    DistilBertForSequenceClassification,
    ElectraConfig,
    ElectraForSequenceClassification,
    GPT2Config,
    GPT2Model,
    RobertaConfig,
    RobertaForSequenceClassification,
    T5Config,
    T5EncoderModel,
    T5ForConditionalGeneration,
    T5Model,
    XLMRobertaConfig,
    XLMRobertaForSequenceClassification,
)

WORDS = ["my", "i", "am", "the", "a", "cat", "dog", "sat", "on", "mat", "book", "flight", "to", "paris", "please", "what", "is", "my", "balance", "transfer", "money", "how", "do", "i", "reset", "password", "weather", "today", "tomorrow", "play", "music", "set", "alarm", "for", "seven", "am", "call", "mom", "order", "pizza", "is", "it", "going", "to", "rain", "cancel", "reservation", "at", "restaurant", "tell", "me", "joke", "translate", "hello", "into", "spanish"]

SMALL = dict(hidden_size=32, num_hidden_layers=4, num_attention_heads=4, intermediate_size=64, max_position_embeddings=64)


@pytest.fixture(scope="session")
def tokenizer() -> BertTokenizerFast:
    """A real WordPiece tokenizer over a tiny vocabulary (built in code, no download)."""
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *sorted(set(WORDS))]
    return BertTokenizerFast(vocab={w: i for i, w in enumerate(vocab)}, model_max_length=48)


def make_model(family: str, num_labels: int = 3, vocab_size: int = 128, **overrides):
    """A tiny random sequence classifier of ``family`` in eval mode (seeded)."""
    torch.manual_seed(0)
    kw = {**SMALL, **overrides}
    if family == "bert":
        m = BertForSequenceClassification(BertConfig(vocab_size=vocab_size, num_labels=num_labels, **kw))
    elif family == "bert-base":
        m = BertModel(BertConfig(vocab_size=vocab_size, **kw))
    elif family == "roberta":
        m = RobertaForSequenceClassification(RobertaConfig(vocab_size=vocab_size, num_labels=num_labels, pad_token_id=0, **kw))
    elif family == "xlm-roberta":
        m = XLMRobertaForSequenceClassification(XLMRobertaConfig(vocab_size=vocab_size, num_labels=num_labels, pad_token_id=0, **kw))
    elif family == "electra":
        m = ElectraForSequenceClassification(ElectraConfig(vocab_size=vocab_size, num_labels=num_labels, embedding_size=16, **kw))
    elif family == "distilbert":
        m = DistilBertForSequenceClassification(
            DistilBertConfig(
                vocab_size=vocab_size, num_labels=num_labels, dim=kw["hidden_size"], n_layers=kw["num_hidden_layers"],
                n_heads=kw["num_attention_heads"], hidden_dim=kw["intermediate_size"], max_position_embeddings=kw["max_position_embeddings"],
            )
        )
    elif family in ("t5", "t5-generation", "t5-encoder"):  # an encoder-decoder model, and its encoder alone
        cls = {"t5": T5Model, "t5-generation": T5ForConditionalGeneration, "t5-encoder": T5EncoderModel}[family]
        m = cls(T5Config(d_model=32, num_layers=2, num_heads=4, d_ff=64, vocab_size=vocab_size, d_kv=8))
    elif family == "gpt2":  # a causal decoder
        m = GPT2Model(GPT2Config(n_embd=32, n_layer=2, n_head=4, vocab_size=vocab_size, n_positions=64, bos_token_id=2, eos_token_id=3))
    else:
        raise ValueError(family)
    return m.eval()


FAMILIES = ["bert", "roberta", "xlm-roberta", "electra", "distilbert"]


TEXTS = (
    "book a flight to paris",
    "what is my balance",
    "play music",
    "how do i reset my password please tell me",
    "is it going to rain tomorrow",
    "set alarm",
    "order pizza",
    "transfer money to mom",
)  # mixed lengths, so batches of them are padded


@pytest.fixture
def texts() -> list[str]:
    return list(TEXTS)


def bad_sources(tmp_path: Path) -> list[tuple[Path, dict]]:
    """Sources and arguments for each ``load_examples`` message that names an argument to fix it."""
    (tmp_path / "cols.csv").write_text("body,y\nhi,1\n")
    (tmp_path / "empty.csv").write_text("text,label\n")
    (tmp_path / "c.json").write_text(json.dumps({"train": [["hi", "greet"]], "test": [["bye", "leave"]]}))
    return [
        (tmp_path / "cols.csv", {}),
        (tmp_path / "cols.csv", {"text_column": "body", "label_column": "lab"}),
        (tmp_path / "cols.csv", {"text_column": "words"}),
        (tmp_path / "empty.csv", {}),
        (tmp_path / "c.json", {"split": "dev"}),
        (tmp_path / "c.json", {"split": ""}),
    ]

