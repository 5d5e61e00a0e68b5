"""``Examples``: texts with optional labels, and which rows of which source they are."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field, replace

from ember.data.labels import encode_known_labels, encode_labels
from ember.errors import DataError
from ember.fixes import LABEL_COLUMN


@dataclass
class Examples:
    """Texts with optional labels (strings or ints), in dataset order.

    Args:
        texts: one text per example.
        labels: one label per example, or ``None``.
        source: where they were read (a path or a dataset name), for messages.
        split: the split they were read from (``None``: the source has no splits).
        total: rows the source's split holds (``None``: these texts are all of them).
        columns: the source's columns, when it has columns (for messages about a missing label column).

    Example:
        >>> ex = Examples(["good", "bad"], ["pos", "neg"])
        >>> ex.label_names(), ex.label_ids()
        (['neg', 'pos'], [1, 0])
        >>> Examples(["a", "b"], source="a.csv", total=10).describe()
        'the first 2 of 10 rows of a.csv'
    """

    texts: list[str]
    labels: list[int | str] | None = None
    source: str = ""
    split: str | None = None
    total: int | None = None
    columns: tuple[str, ...] | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        if self.labels is not None and len(self.labels) != len(self.texts):
            raise DataError(f"{len(self.texts)} texts but {len(self.labels)} labels in {self.source or 'the data'}")

    def __len__(self) -> int:
        return len(self.texts)

    def label_names(self) -> list[str] | None:
        """Distinct string labels in id order (:func:`~ember.data.labels.label_order`); ``None`` for integer or missing labels."""
        if self.labels is None:
            return None
        return encode_labels(self.labels)[1]

    def label_ids(self, names: Sequence[str] | None = None) -> list[int] | None:
        """Labels as class ids; string labels index ``names`` (default: :meth:`label_names`), which must hold them all."""
        if self.labels is None:
            return None
        if names is None:
            return encode_labels(self.labels)[0]
        return encode_known_labels(self.labels, names, where=self.source or "the data")

    def require_labels(self, why: str = "this needs labels") -> list[int | str]:
        """The labels; a :class:`~ember.errors.DataError` naming the source's columns and ``label_column=`` when
        there are none.

        Example:
            >>> Examples(["a"], source="a.csv", columns=("text", "category")).require_labels()
            Traceback (most recent call last):
            ...
            ember.errors.DataError: a.csv has no labels (this needs labels): no label column was found among its columns ['text', 'category']. Pass the right name: label_column='NAME'.
        """
        if self.labels is not None:
            return self.labels
        cols = f": no label column was found among its columns {list(self.columns)}" if self.columns else ""
        raise DataError(
            f"{self.source or 'the data'} has no labels ({why}){cols}. {LABEL_COLUMN}.", fixes=[LABEL_COLUMN]
        )

    def select(self, n: int | None) -> Examples:
        """The first ``n`` examples (all when ``n`` is None)."""
        if n is None:
            return self
        if n < 0:
            raise ValueError(f"limit must be >= 0 (the first N examples), got {n}")
        if n >= len(self):
            return self
        labels = None if self.labels is None else self.labels[:n]
        return replace(self, texts=self.texts[:n], labels=labels, total=self.total or len(self))

    def describe(self) -> str:
        """Which rows these are, for a report: how many of how many, of which split of which source.

        Example:
            >>> Examples(["a"] * 3, source="clinc150/data_full.json", split="test").describe()
            "all 3 rows of split 'test' of clinc150/data_full.json"
        """
        where = self.source or "the data"
        if self.split and self.split not in where:  # sources with splits are named "path:split" or ".../test.csv"
            where = f"split {self.split!r} of {where}"
        if self.total is not None and self.total != len(self):
            return f"the first {len(self)} of {self.total} rows of {where}"
        return f"all {len(self)} rows of {where}"

    def provenance(self) -> dict:
        """:meth:`describe` as data, for a JSON result line: source, split, rows, of (rows in the split)."""
        return {"source": self.source, "split": self.split, "rows": len(self), "of": self.total or len(self),
                "rows_used": self.describe()}
