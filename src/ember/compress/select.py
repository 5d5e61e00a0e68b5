"""A student built from a subset of the teacher's layers, initialised from the teacher's weights."""

from __future__ import annotations

import copy
import numbers
from collections.abc import Sequence
from dataclasses import dataclass

from torch import nn

from ember.compress.errors import CompressConfigError, StudentMismatchError
from ember.compress.families import layer_shape
from ember.models.families import find_parts


@dataclass(frozen=True)
class LayerSelection:
    """Which teacher layers a student keeps, in order (0-based indices into the teacher's layer list).

    Build one with the named factories :func:`every_other`, :func:`first` or :func:`layers`.

    Example:
        >>> every_other().resolve(6)
        (0, 2, 4)
    """

    kind: str = "every_other"
    count: int | None = None
    indices: tuple[int, ...] = ()

    def __post_init__(self) -> None:
        if self.kind not in ("every_other", "first", "given"):
            raise CompressConfigError(f"LayerSelection.kind={self.kind!r} is not one of 'every_other', 'first', 'given'")
        if self.kind == "first" and (not _is_int(self.count) or self.count < 1):
            raise CompressConfigError(f"first(k) keeps k >= 1 layers, got k={self.count!r}")
        if self.kind == "given":
            bad = [i for i in self.indices if not _is_int(i)]
            if bad or not self.indices:
                raise CompressConfigError(f"layers(...) takes a non-empty list of layer indices (ints), got {list(self.indices)!r}")
            if len(set(self.indices)) != len(self.indices):
                raise CompressConfigError(f"layer indices {list(self.indices)} repeat a layer; give each teacher layer once")
            object.__setattr__(self, "indices", tuple(int(i) for i in self.indices))

    def resolve(self, num_layers: int) -> tuple[int, ...]:
        """The teacher layer indices for a teacher of ``num_layers`` layers (refused when one is outside it)."""
        if self.kind == "every_other":
            return tuple(range(0, num_layers, 2))
        chosen = tuple(range(self.count or 0)) if self.kind == "first" else self.indices
        outside = [i for i in chosen if not 0 <= i < num_layers]
        if outside:
            raise StudentMismatchError(
                f"layer indices {outside} are outside the teacher, which has {num_layers} layers (indices 0..{num_layers - 1}); "
                f"pick layers among them, e.g. --layers {','.join(map(str, range(0, num_layers, 2)))}"
            )
        return chosen

    def to_dict(self) -> dict:
        return {"kind": self.kind, "count": self.count, "indices": list(self.indices)}


def _is_int(value: object) -> bool:
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def every_other() -> LayerSelection:
    """Layers 0, 2, 4, … (DistilBERT's choice: half the depth, spread over the whole teacher)."""
    return LayerSelection("every_other")


def first(k: int) -> LayerSelection:
    """The teacher's first ``k`` layers."""
    return LayerSelection("first", count=k)


def layers(indices: Sequence[int]) -> LayerSelection:
    """The given teacher layers, in the given order."""
    return LayerSelection("given", indices=tuple(indices))


def parse_layers(text: str) -> LayerSelection:
    """A selection from command-line text: ``every-other``, ``first:3`` or ``0,2,4``.

    Example:
        >>> parse_layers("0,2,4").indices
        (0, 2, 4)
    """
    text = text.strip()
    if text in ("every-other", "every_other"):
        return every_other()
    if text.startswith("first:"):
        count = text.partition(":")[2]
        if not count.strip().isdigit():
            raise CompressConfigError(f"--layers {text!r}: first:K takes a number of layers, e.g. first:3")
        return first(int(count))
    try:
        return layers([int(x) for x in text.split(",") if x.strip()])
    except ValueError:
        raise CompressConfigError(
            f"--layers {text!r} is not a list of layer indices; pass e.g. 0,2,4, every-other or first:3"
        ) from None


def select_layers(teacher: nn.Module, selection: LayerSelection | Sequence[int] = every_other()) -> nn.Module:
    """A student: a copy of ``teacher`` with only the selected layers (weights copied), its head included.

    Args:
        teacher: a supported encoder (BERT, RoBERTa, XLM-R, DistilBERT, ELECTRA), with or without a head.
        selection: a :class:`LayerSelection` (``every_other()``, ``first(3)``, ``layers([0, 2, 4])``) or a
            list of layer indices.

    Returns:
        A new model of the teacher's class whose config says the new depth; the teacher is not changed.

    Example:
        >>> student = select_layers(teacher, every_other())  # doctest: +SKIP
        >>> student.config.num_hidden_layers  # doctest: +SKIP
        3
    """
    if not isinstance(selection, LayerSelection):
        selection = layers(selection)
    parts = find_parts(teacher)
    row = layer_shape(parts)
    chosen = selection.resolve(parts.num_layers)
    student = copy.deepcopy(teacher)
    sparts = find_parts(student)
    kept = nn.ModuleList([sparts.layers[i] for i in chosen])
    parent_path, _, name = _layer_list_path(sparts).rpartition(".")
    parent = sparts.base.get_submodule(parent_path) if parent_path else sparts.base
    setattr(parent, name, kept)
    setattr(student.config, row.layers_key, len(chosen))
    for j, layer in enumerate(kept):  # layer_idx is read by caches; keep it consistent with the new position
        for m in layer.modules():
            if hasattr(m, "layer_idx"):
                m.layer_idx = j
    student.config.ember_teacher_layers = list(chosen)
    return student


def _layer_list_path(parts) -> str:
    """Dotted path of ``parts.layers`` inside ``parts.base``."""
    for name, module in parts.base.named_modules():
        if module is parts.layers:
            return name
    raise StudentMismatchError("the layer list is not inside the base model; ember cannot replace it")
