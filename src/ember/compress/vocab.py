"""Smaller embedding tables: keep only the tokens a task uses, and store the table in int8.

In MiniLM-L6 the 30,522 x 384 word embeddings are half of the 90 MB model, and a task such as CLINC150 uses a
few thousand of those tokens. Trimming (TextPruner's vocabulary pruning) keeps the rows of the tokens seen
in the given texts; an id outside them reads the ``[UNK]`` row. Here the tokenizer is left as it is: the
embedding module maps the tokenizer's ids to rows of the smaller table through a lookup buffer, so the same
tokenizer serves every compressed model, of any family (WordPiece, BPE, SentencePiece), and the lookup is
part of the exported graph (one ``Gather``), in PyTorch, ONNX Runtime and OpenVINO alike.

int8 rows (one scale per row, symmetric) quarter the table again. No library quantises an embedding table
into a form that exports to ONNX Runtime *and* OpenVINO through ``torch.onnx``/``ov.convert_model``
(torchao's weight-only int8 is a tensor subclass the exporters do not take; ONNX Runtime's quantiser leaves
ember's fused embeddings in fp32), so the few lines doing it are here.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from ember.compress.errors import CompressConfigError


class TrimmedEmbedding(nn.Module):
    """An embedding table over a subset of a vocabulary, taking the full vocabulary's ids.

    Args:
        weight: ``(kept, H)`` rows of the kept tokens.
        remap: ``(V,)`` int64: for each id of the full vocabulary, its row in ``weight`` (the unknown token's
            row for ids not kept).
        padding_idx: the full vocabulary's padding id, kept for code that reads it.

    Example:
        >>> emb = TrimmedEmbedding(torch.randn(3, 4), torch.tensor([0, 2, 2, 1, 2]))
        >>> emb(torch.tensor([[3, 4]])).shape
        torch.Size([1, 2, 4])
    """

    def __init__(self, weight: torch.Tensor, remap: torch.Tensor, padding_idx: int | None = None) -> None:
        super().__init__()
        self.weight = nn.Parameter(weight.detach().clone())  # (kept, H)
        self.register_buffer("remap", remap.to(torch.long).clone())  # (V,)
        self.num_embeddings = int(remap.numel())  # ids accepted (the tokenizer's vocabulary)
        self.embedding_dim = int(weight.shape[1])
        self.padding_idx = padding_idx

    @property
    def kept(self) -> int:
        """Rows actually stored."""
        return int(self.weight.shape[0])

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        return F.embedding(self.remap[input_ids], self.weight)  # (B, T) -> (B, T, H)


class Int8Embedding(nn.Module):
    """A frozen embedding table stored as int8 rows with one fp32 scale per row (symmetric).

    Args:
        weight: ``(N, H)`` float rows to quantise.
        remap: optional ``(V,)`` id -> row lookup (a trimmed vocabulary), as in :class:`TrimmedEmbedding`.

    Example:
        >>> emb = Int8Embedding(torch.randn(5, 4))
        >>> (emb(torch.tensor([[1]])) - emb.dequantized()[1]).abs().max().item() == 0.0
        True
    """

    def __init__(self, weight: torch.Tensor, remap: torch.Tensor | None = None, padding_idx: int | None = None) -> None:
        super().__init__()
        w = weight.detach().float()
        scale = w.abs().amax(dim=1, keepdim=True).clamp(min=1e-12) / 127.0  # (N, 1)
        self.register_buffer("qweight", torch.round(w / scale).clamp(-127, 127).to(torch.int8))  # (N, H)
        self.register_buffer("scale", scale)
        self.register_buffer("remap", None if remap is None else remap.to(torch.long).clone())
        self.num_embeddings = int(w.shape[0] if remap is None else remap.numel())
        self.embedding_dim = int(w.shape[1])
        self.padding_idx = padding_idx

    @property
    def kept(self) -> int:
        return int(self.qweight.shape[0])

    def dequantized(self) -> torch.Tensor:
        """The ``(N, H)`` float table this module serves."""
        return self.qweight.float() * self.scale

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        rows = input_ids if self.remap is None else self.remap[input_ids]  # (B, T)
        return F.embedding(rows, self.qweight).float() * F.embedding(rows, self.scale)  # (B, T, H) * (B, T, 1)


def used_tokens(tokenizer, texts: Iterable[str], *, max_length: int | None = None) -> list[int]:
    """Sorted ids of every token the tokenizer makes of ``texts``, plus its special tokens."""
    ids: set[int] = set(int(i) for i in getattr(tokenizer, "all_special_ids", []))
    texts = list(texts)
    for start in range(0, len(texts), 2048):
        enc = tokenizer(texts[start : start + 2048], truncation=max_length is not None, max_length=max_length)
        for row in enc["input_ids"]:
            ids.update(int(i) for i in row)
    return sorted(ids)


def trim_vocabulary(model: nn.Module, tokenizer, texts: Sequence[str] | None = None, *,
                    keep: Sequence[int] | None = None) -> nn.Module:
    """Keep only the embedding rows of the tokens ``texts`` use (or the ids ``keep``), in place; returns ``model``.

    The tokenizer is unchanged; ids of tokens not kept read the unknown token's row (the texts a model is
    trained on decide which tokens it has learned anyway). Text the model will serve that uses other words
    loses them: pass those texts (or a larger corpus) too.

    Args:
        model: a Hugging Face encoder whose ``get_input_embeddings()`` is an ``nn.Embedding``.
        tokenizer: its tokenizer (its special tokens are always kept).
        texts: the texts whose tokens to keep (e.g. the training split).
        keep: token ids to keep instead of ``texts``.

    Example:
        >>> trim_vocabulary(student, tokenizer, train.texts)  # doctest: +SKIP
        >>> student.get_input_embeddings().kept  # doctest: +SKIP
        6013
    """
    emb = model.get_input_embeddings()
    if not isinstance(emb, nn.Embedding):
        raise CompressConfigError(f"the model's input embeddings are a {type(emb).__name__}, not an nn.Embedding; trim the "
                                  "vocabulary once, before quantising the embeddings")
    if (texts is None) == (keep is None):
        raise CompressConfigError("pass either texts (whose tokens are kept) or keep (token ids), not both or neither")
    ids = sorted(set(int(i) for i in keep)) if keep is not None else used_tokens(tokenizer, texts or [])
    ids = sorted(set(ids) | {int(i) for i in getattr(tokenizer, "all_special_ids", [])})
    unk = getattr(tokenizer, "unk_token_id", None)
    if unk is None:
        raise CompressConfigError(f"{type(tokenizer).__name__} has no unknown token, so ids not kept would have no row to "
                                  "read; trim only with a tokenizer that has one (unk_token)")
    ids = sorted(set(ids) | {int(unk)})
    outside = [i for i in ids if not 0 <= i < emb.num_embeddings]
    if outside:
        raise CompressConfigError(f"token ids {outside[:5]} are outside the model's {emb.num_embeddings}-row embedding "
                                  "table: the tokenizer is not this model's")
    index = torch.tensor(ids, dtype=torch.long)
    remap = torch.full((emb.num_embeddings,), ids.index(int(unk)), dtype=torch.long)
    remap[index] = torch.arange(len(ids))
    model.set_input_embeddings(TrimmedEmbedding(emb.weight.detach()[index], remap, emb.padding_idx))
    model.config.ember_vocabulary = len(ids)
    return model


def quantize_embeddings(model: nn.Module, *, positions: bool = True) -> nn.Module:
    """Store the word (and position) embedding tables as int8 rows, in place; returns ``model``.

    Done last, for serving: the int8 tables are frozen buffers. Position embeddings are quantised too when
    ``positions`` is true and the model has an ``embeddings.position_embeddings`` table.
    """
    emb = model.get_input_embeddings()
    if isinstance(emb, TrimmedEmbedding):
        model.set_input_embeddings(Int8Embedding(emb.weight, emb.remap, emb.padding_idx))
    elif isinstance(emb, nn.Embedding):
        model.set_input_embeddings(Int8Embedding(emb.weight, None, emb.padding_idx))
    elif not isinstance(emb, Int8Embedding):
        raise CompressConfigError(f"cannot quantise input embeddings of type {type(emb).__name__}")
    embeddings = getattr(model.base_model, "embeddings", None)
    pos = getattr(embeddings, "position_embeddings", None)
    if positions and isinstance(pos, nn.Embedding):
        embeddings.position_embeddings = Int8Embedding(pos.weight, None, pos.padding_idx)
    model.config.ember_int8_embeddings = True
    model.config.ember_int8_positions = bool(positions and pos is not None)
    return model
