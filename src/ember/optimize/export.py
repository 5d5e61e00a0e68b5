"""ONNX export that keeps the attention mask.

Tracing a transformers 5 encoder with an unpadded example (attention mask all ones) lets the mask
logic fold away: the graph then ignores padding, and padded batches come out wrong (cosine ≈ 0.3)
while single sentences look perfect. ember always exports with a padded batch of mixed lengths, with
batch and sequence axes dynamic, and verifies on padded batches.

Two exporters:
  - ``"torchscript"`` (``torch.onnx.export(dynamo=False)``) with eager attention: its graph is the one
    ONNX Runtime's transformer optimizer recognises whole (EmbedLayerNormalization, Attention, BiasGelu;
    SkipLayerNormalization on request), which is what makes the ONNX Runtime artifacts fast;
  - ``"dynamo"`` (``torch.export``-based), the exporter PyTorch recommends for new work; fused with
    onnxscript's rewriter, which leaves the embeddings and the mask arithmetic unfused.
"""

from __future__ import annotations

import contextlib
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Literal

import torch
from torch import nn

from ember.errors import UnsupportedModelError
from ember.models.size import weight_bytes
from ember.optimize.artifact import ModelFacts

SUPPORTED_EXPORT = ("bert", "roberta", "xlm-roberta", "electra", "distilbert")


class _Positional(nn.Module):
    """Calls a Hugging Face model with keyword inputs and returns one tensor (what ONNX needs)."""

    def __init__(self, model: nn.Module, names: tuple[str, ...], output: str) -> None:
        super().__init__()
        self.model, self.names, self.output = model, names, output

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor, token_type_ids: torch.Tensor | None = None):
        feeds = {"input_ids": input_ids, "attention_mask": attention_mask, "token_type_ids": token_type_ids}
        return getattr(self.model(**{n: feeds[n] for n in self.names}), self.output)


def check_exportable(model: nn.Module, facts: ModelFacts) -> None:
    """Refuse architectures the exporter is not tested on, naming the supported ones."""
    if facts.model_type not in SUPPORTED_EXPORT:
        raise UnsupportedModelError(
            f"cannot export a {facts.model_type!r} model ({type(model).__name__}) to ONNX: ember's exporter supports "
            f"{', '.join(SUPPORTED_EXPORT)}; use BF16Config or Int8DynamicConfig, which work on any PyTorch model"
        )


# one ONNX protobuf stops at 2 GiB, and torch's exporters write the weights to separate files past it (the dynamo
# exporter already past 1536 MiB); ember's ONNX Runtime artifacts are one in-memory protobuf (built, verified, saved
# and loaded as bytes), so the lower of the two is the limit for either exporter
ONNX_MAX_WEIGHT_BYTES = 1536 * 1024 * 1024


def check_onnx_size(model: nn.Module) -> None:
    """Refuse, before any export, a model whose weights would not fit one ONNX file held in memory.

    Why: past ``ONNX_MAX_WEIGHT_BYTES`` torch's exporters move the weights to external-data files, which ember's
    ONNX Runtime artifacts (one protobuf, built and loaded as bytes) cannot carry; the export, fusion and
    quantisation would run for minutes first and then fail far from the cause (e.g. XLM-R large: 560M parameters,
    2.2 GB in float32). OpenVINO converts from PyTorch with no such limit."""
    size = weight_bytes(model)
    if size > ONNX_MAX_WEIGHT_BYTES:
        raise UnsupportedModelError(
            f"cannot build an ONNX Runtime artifact of {type(model).__name__}: its weights take {size / 2**30:.2f} GiB, "
            f"past the {ONNX_MAX_WEIGHT_BYTES / 2**30:.1f} GiB one ONNX file held in memory can carry (ember keeps "
            "ONNX Runtime models as one protobuf; larger ones need external weight files, which it does not write); "
            "use an OpenVINO preset (openvino, openvino-bf16, openvino-int8: OpenVINOConfig converts from PyTorch "
            "with no size limit) or BF16Config / Int8DynamicConfig"
        )


def dummy_batch(facts: ModelFacts) -> tuple[torch.Tensor, ...]:
    """A padded batch of three rows of different lengths (so the mask path is traced), in input order."""
    b, t = 3, 8
    ids = torch.randint(5, 50, (b, t))  # (B, T)
    mask = torch.ones(b, t, dtype=torch.long)
    mask[1, 5:] = 0
    mask[2, 2:] = 0
    feeds = {"input_ids": ids * mask, "attention_mask": mask, "token_type_ids": torch.zeros_like(ids)}
    return tuple(feeds[n] for n in facts.input_names)


@contextlib.contextmanager
def eager_attention(model: nn.Module) -> Iterator[None]:
    """Run ``model`` with the plain (eager) attention implementation inside the block, then restore it.

    Eager attention traces to the MatMul/Softmax pattern the ONNX Runtime optimizer fuses into ``Attention``;
    the model is left as it was (its ``config._attn_implementation`` is put back).
    """
    cfg = getattr(model, "config", None)
    before = getattr(cfg, "_attn_implementation", None)
    setter = getattr(model, "set_attn_implementation", None)
    if setter is None or before in (None, "eager"):
        yield
        return
    setter("eager")
    try:
        yield
    finally:
        setter(before)


def export_onnx(model: nn.Module, facts: ModelFacts, path: str | Path,
                exporter: Literal["torchscript", "dynamo"] = "dynamo") -> Path:
    """Export ``model`` to ONNX at ``path`` with dynamic batch and sequence axes; returns the path.

    Args:
        model: the Hugging Face model (not modified).
        facts: its ``ModelFacts`` (input names, output kind).
        path: where to write the ``.onnx`` file.
        exporter: ``"torchscript"`` (eager attention, the graph ONNX Runtime's optimizer fuses whole) or
            ``"dynamo"``. Both trace a padded batch of mixed lengths, so the attention mask stays in the graph.

    Returns:
        ``path``.

    Example:
        >>> export_onnx(model, facts, "model.onnx", exporter="torchscript")  # doctest: +SKIP
    """
    check_exportable(model, facts)
    path = Path(path)
    wrapper = _Positional(model, facts.input_names, facts.output).eval()
    axes = {n: {0: "batch", 1: "sequence"} for n in facts.input_names}
    axes[facts.output] = {0: "batch", 1: "sequence"} if facts.output == "last_hidden_state" else {0: "batch"}
    names = {"input_names": list(facts.input_names), "output_names": [facts.output], "dynamic_axes": axes}
    with warnings.catch_warnings(), torch.inference_mode(False), torch.no_grad():
        warnings.simplefilter("ignore")
        if exporter == "torchscript":
            with eager_attention(model):
                torch.onnx.export(wrapper, dummy_batch(facts), str(path), dynamo=False, opset_version=17, **names)
        else:
            torch.onnx.export(wrapper, dummy_batch(facts), str(path), dynamo=True, opset_version=18, verbose=False,
                              external_data=False, **names)
    return path
