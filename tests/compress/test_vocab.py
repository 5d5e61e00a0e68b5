"""Smaller embedding tables: trimmed to the task's tokens, stored as int8 rows, saved and loaded back."""

from __future__ import annotations

import pytest
import torch
from tiny import labelled, one_thread, tiny_teacher  # noqa: F401  (autouse fixture)

from ember.compress import load_compressed, quantize_embeddings, save_compressed, trim_vocabulary
from ember.compress.errors import CompressConfigError
from ember.compress.vocab import Int8Embedding, TrimmedEmbedding


def test_trimming_keeps_the_outputs_on_the_texts_it_was_trimmed_for(tokenizer):
    model = tiny_teacher()
    texts = labelled(1)[0]
    batch = tokenizer(texts, padding=True, return_tensors="pt")
    want = model(**batch).logits
    trim_vocabulary(model, tokenizer, texts)
    emb = model.get_input_embeddings()
    assert isinstance(emb, TrimmedEmbedding) and emb.num_embeddings == 128
    assert emb.kept < 40 and model.config.ember_vocabulary == emb.kept
    assert torch.allclose(model(**batch).logits, want, atol=1e-6)


def test_an_id_not_kept_reads_the_unknown_tokens_row(tokenizer):
    model = tiny_teacher()
    trim_vocabulary(model, tokenizer, ["play music"])
    emb = model.get_input_embeddings()
    unseen = tokenizer.convert_tokens_to_ids("weather")
    assert torch.equal(emb(torch.tensor([unseen])), emb(torch.tensor([tokenizer.unk_token_id])))


def test_int8_rows_are_close_and_four_times_smaller(tokenizer):
    model = tiny_teacher()
    trim_vocabulary(model, tokenizer, labelled(1)[0])
    before = model.get_input_embeddings().weight.detach().clone()
    quantize_embeddings(model)
    emb = model.get_input_embeddings()
    assert isinstance(emb, Int8Embedding) and emb.qweight.dtype == torch.int8
    assert (emb.dequantized() - before).abs().max() <= before.abs().amax(1, keepdim=True).max() / 254 + 1e-7
    assert isinstance(model.bert.embeddings.position_embeddings, Int8Embedding)


def test_compressed_embeddings_save_and_load_back_exactly(tokenizer, tmp_path):
    model = tiny_teacher("distilbert")
    trim_vocabulary(model, tokenizer, labelled(1)[0])
    quantize_embeddings(model)
    save_compressed(model, tmp_path / "m", tokenizer, info={"note": "test"})
    again, tok = load_compressed(tmp_path / "m")
    batch = tokenizer(labelled(1)[0], padding=True, return_tensors="pt")
    assert torch.equal(model(**batch).logits, again(**batch).logits)
    assert tok.get_vocab() == tokenizer.get_vocab()


def test_trimming_needs_an_unknown_token(tokenizer):
    class NoUnk:
        unk_token_id = None
        all_special_ids: list[int] = []

    with pytest.raises(CompressConfigError, match="has no unknown token"):
        trim_vocabulary(tiny_teacher(), NoUnk(), keep=[1, 2])
    with pytest.raises(CompressConfigError, match="pass either texts"):
        trim_vocabulary(tiny_teacher(), tokenizer)
