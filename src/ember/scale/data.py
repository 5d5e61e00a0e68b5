"""Ray Datasets as ember examples: the driver reads the text (and label, id) columns in the dataset's order.

A fill keys every example on the driver (to find what is missing and to record the split in dataset order), and
batch scoring builds the same length-sorted batches as one process, so both read the columns they need here; the
model work is what runs on the cluster. The driver holds those columns in memory (about 100 MB per million
100-character texts).
"""

from __future__ import annotations

from dataclasses import dataclass

from ember.data.loaders import Examples
from ember.errors import DataError


@dataclass
class Rows:
    """Examples read from a Ray Dataset, with the dataset's ids (``None`` when no id column was named)."""

    examples: Examples
    ids: list | None = None


def read_dataset(ds, text_column: str = "text", label_column: str | None = None, id_column: str | None = None) -> Rows:
    """The text, label and id columns of a ``ray.data.Dataset``, in the dataset's order.

    Args:
        ds: the dataset.
        text_column: column holding the texts.
        label_column: column holding labels (class names or ids), if any.
        id_column: column holding row ids to carry into batch-scoring output, if any.

    Example:
        >>> rows = read_dataset(ray.data.read_parquet("s3://bucket/texts/"), "text", "intent")  # doctest: +SKIP
        >>> rec.fill(rows.examples, executor=RayExecutor())                                    # doctest: +SKIP
    """
    wanted = [c for c in (text_column, label_column, id_column) if c is not None]
    have = list(ds.schema().names)
    missing = [c for c in wanted if c not in have]
    if missing:
        raise DataError(
            f"the Ray Dataset has no column {missing[0]!r}; its columns are {have}. Pass the right name: "
            "text_column='NAME' (label_column=, id_column=)"
        )
    selected = ds.select_columns(wanted)
    options = selected.context.execution_options  # the dataset's own context (shared with ds): restored below
    before = options.preserve_order
    options.preserve_order = True  # the split record keeps the dataset's order, as a local fill does
    try:
        columns: dict[str, list] = {c: [] for c in wanted}
        for block in selected.iter_batches(batch_size=None, batch_format="pyarrow"):
            for c in wanted:
                columns[c] += block.column(c).to_pylist()
    finally:
        options.preserve_order = before
    labels = None if label_column is None else columns[label_column]
    examples = Examples(columns[text_column], labels, source=f"Ray Dataset column {text_column!r}")
    return Rows(examples, None if id_column is None else columns[id_column])
