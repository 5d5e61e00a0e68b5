"""Labels a teacher's head knows: class names through its ``id2label``, class ids below its number of outputs."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from ember.data.labels import label_values
from ember.errors import DataError

if TYPE_CHECKING:
    from ember.compress.outputs import TeacherFacts


def teacher_label_ids(labels: Sequence, facts: TeacherFacts, *, count: int | None = None) -> list[int]:
    """Class ids of ``labels`` in the teacher's head, refusing labels the head does not know.

    Args:
        labels: class ids (ints) or class names (strings), one per example.
        facts: the teacher's recorded facts (number of outputs, class names).
        count: the number of examples, when known.

    Raises:
        DataError: a name not among the head's classes, names for a head without names, or an id past its outputs.

    Example:
        >>> from ember.compress.outputs import TeacherFacts
        >>> facts = TeacherFacts(10, 8, 2, 2, (), 0, ("neg", "pos"))
        >>> teacher_label_ids(["pos", "neg"], facts)
        [1, 0]
    """
    values = label_values(labels, count)
    n = facts.num_labels
    if values and isinstance(values[0], str):
        names = list(facts.label_names or [])
        if not names:
            raise DataError(
                f"the labels are class names ({', '.join(map(repr, values[:3]))} ...) but the teacher's head has no names "
                f"for its {n} classes (its config.id2label is LABEL_0, LABEL_1 ...); label the data with the class ids the "
                "teacher was trained on, or load the teacher with its label names"
            )
        index = {name: i for i, name in enumerate(names)}
        unknown = sorted({v for v in values if v not in index})
        if unknown:
            raise DataError(
                f"labels {unknown[:5]} are not among the teacher's {n} classes ({', '.join(names[:5])}{' ...' if n > 5 else ''}): "
                "its head cannot teach them. Use a teacher fine-tuned on these labels, or drop those examples"
            )
        return [index[v] for v in values]
    ids: list[int] = values  # type: ignore[assignment]
    if ids and max(ids) >= n:
        raise DataError(
            f"label id {max(ids)} is past the teacher's head, which has {n} outputs (ids 0..{n - 1}): the teacher does not "
            "know this class. Use a teacher fine-tuned on these labels, or map the labels to its classes"
        )
    return ids
