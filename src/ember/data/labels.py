"""One mapping from user labels (ints, numpy ints, int tensors, strings) to class ids."""

from __future__ import annotations

import numbers
from collections.abc import Sequence

from ember.errors import DataError


def _as_int(x) -> int | None:
    if isinstance(x, bool):
        return int(x)
    if isinstance(x, numbers.Integral):
        return int(x)
    is_tensor = hasattr(x, "dim") and hasattr(x, "is_floating_point")
    if is_tensor and x.dim() == 0 and not x.is_floating_point() and not x.is_complex():
        return int(x)
    return None


def encode_labels(labels: Sequence, names: Sequence[str] | None = None) -> tuple[list[int], list[str] | None]:
    """Class ids for ``labels`` and the label names they index (``None`` for integer labels).

    Integer labels (Python, numpy or 0-d integer tensors) are ids already. String labels index ``names``;
    names not seen before are appended in sorted order, so ids given earlier never move. Floats and
    a mix of integers and strings are refused.

    Example:
        >>> encode_labels(["pos", "neg", "pos"])
        ([1, 0, 1], ['neg', 'pos'])
        >>> encode_labels(["new", "neg"], ["neg", "pos"])
        ([2, 0], ['neg', 'pos', 'new'])
    """
    ints = [_as_int(x) for x in labels]
    if all(i is not None for i in ints):
        if any(i < 0 for i in ints):  # type: ignore[operator]
            raise DataError(f"label ids must be >= 0; got {min(ints)}")  # type: ignore[type-var]
        return ints, None  # type: ignore[return-value]
    bad = [x for x, i in zip(labels, ints, strict=True) if i is None and not isinstance(x, str)]
    if bad:
        raise DataError(
            f"labels must be integers or strings; got {type(bad[0]).__name__} {bad[0]!r}. Convert float or other "
            "labels to class ids or names first."
        )
    if any(i is not None for i in ints):
        raise DataError("labels mix integers and strings; use one kind (all class ids, or all class names)")
    known = list(names or [])
    seen = set(known)
    known += sorted({x for x in labels if x not in seen})
    index = {n: i for i, n in enumerate(known)}
    return [index[x] for x in labels], known
