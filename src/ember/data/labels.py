"""One mapping from user labels (ints, numpy ints, int tensors, strings) to class ids.

Recycling, the encoder cache and the data loaders all map labels here, so the same labels get the same
ids whichever of them stored them.
"""

from __future__ import annotations

import numbers
import re
from collections.abc import Sequence

from ember.errors import DataError

_INT_TEXT = re.compile(r"[+-]?[0-9]+")


def label_values(labels, count: int | None = None) -> list[int] | list[str]:
    """Plain labels, all ints or all strings: numpy ints and 0-d integer tensors become ints.

    Args:
        labels: one label per example.
        count: the number of examples, when the caller knows it; a different number of labels is refused.

    Raises:
        DataError: floats, other objects, a mix of ints and strings, or a wrong count; the message names
            the first offending label and how to fix it.

    Example:
        >>> label_values(["pos", "neg"])
        ['pos', 'neg']
    """
    if isinstance(labels, (str, bytes)) or not hasattr(labels, "__len__"):
        raise DataError(f"labels must be a sequence with one label per example, got a {type(labels).__name__}")
    if count is not None and len(labels) != count:
        raise DataError(f"{count} examples but {len(labels)} labels; give exactly one label per example")
    out: list = []
    first: dict[type, int] = {}
    for i, y in enumerate(labels):
        if getattr(y, "ndim", None) == 0 and hasattr(y, "item"):  # 0-d tensor or numpy array
            y = y.item()
        if isinstance(y, str):
            kind = str
        elif isinstance(y, numbers.Integral):
            y, kind = int(y), int
        elif isinstance(y, numbers.Real):
            raise DataError(
                f"label {i} is the float {y!r}; labels must be integers (class ids) or strings (class names). "
                "Convert class ids stored as floats with int(), or train a regression head without cached labels "
                "(dataset(labels=False))"
            )
        else:
            shape = f" of shape {tuple(y.shape)}" if hasattr(y, "shape") else ""
            raise DataError(
                f"label {i} is a {type(y).__name__}{shape}; each example needs one label: an int (numpy ints and 0-d "
                "integer tensors count) or a str"
            )
        first.setdefault(kind, i)
        if len(first) > 1:
            j, k = first[int], first[str]
            raise DataError(
                f"labels mix integers and strings (label {j}: {labels[j]!r}, label {k}: {labels[k]!r}); use one kind: "
                "all class ids (int) or all class names (str)"
            )
        if kind is int and y < 0:
            raise DataError(
                f"label {i} is {y}; class ids must be >= 0. Unlabelled examples (a test split marked -1) are filled "
                "without labels"
            )
        out.append(y)
    return out


def label_order(names: set[str] | Sequence[str]) -> list[str]:
    """Order in which new label names get ids: numerically when every name is an integer written as text
    (``"2"`` before ``"10"``), else lexicographically.

    Example:
        >>> label_order({"10", "2"}), label_order({"pos", "neg"})
        (['2', '10'], ['neg', 'pos'])
    """
    names = set(names)
    if names and all(_INT_TEXT.fullmatch(x) for x in names):
        return sorted(names, key=lambda x: (int(x), x))
    return sorted(names)


def encode_labels(
    labels: Sequence, names: Sequence[str] | None = None, *, count: int | None = None
) -> tuple[list[int], list[str] | None]:
    """Class ids for ``labels`` and the label names they index (``None`` for integer labels).

    Integer labels are ids already. String labels index ``names``; names not seen before are appended in
    :func:`label_order`, so ids given earlier never move. Validation is :func:`label_values`'s.

    Example:
        >>> encode_labels(["pos", "neg", "pos"])
        ([1, 0, 1], ['neg', 'pos'])
        >>> encode_labels(["new", "neg"], ["neg", "pos"])
        ([2, 0], ['neg', 'pos', 'new'])
    """
    values = label_values(labels, count)
    if not values or isinstance(values[0], int):
        return values, None  # type: ignore[return-value]
    known = list(names or [])
    seen = set(known)
    known += label_order({x for x in values if x not in seen})
    index = {n: i for i, n in enumerate(known)}
    return [index[x] for x in values], known


def encode_known_labels(labels: Sequence, names: Sequence[str] | None, *, where: str = "the data") -> list[int]:
    """Class ids for ``labels`` when every string label must already be one of ``names`` (a trained model's).

    Raises:
        DataError: a label name the model was not trained on, listing the first few.

    Example:
        >>> encode_known_labels(["pos"], ["neg", "pos"])
        [1]
    """
    ids, full = encode_labels(labels, names)
    if full is not None and len(full) > len(names or []):
        unknown = full[len(names or []) :]
        raise DataError(
            f"labels {unknown[:5]} in {where} are not among the model's {len(names or [])} labels; train a head that "
            "knows them or map them first"
        )
    return ids
