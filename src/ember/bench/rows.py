"""Which rows a benchmark measured: the scripts in ``benchmarks/`` read their data through here and say so.

Every script takes ``--data``, ``--split``, ``--model``, ``--text-column`` and ``--label-column`` (read by
:func:`ember.data.load_examples`, as ``ember bench`` reads them) and prints one line per set of rows it used
(what for, source, split, how many of how many, how they were chosen), the same in its final JSON line.

Example:
    >>> ap = argparse.ArgumentParser()
    >>> data_options(ap, data="../shared/data/clinc150", split="test")  # doctest: +SKIP
    >>> args = ap.parse_args([])  # doctest: +SKIP
    >>> timed, used = load_rows(args, "timed")  # doctest: +SKIP
    >>> print(used.line())  # doctest: +SKIP
    timed: 4,500 of 4,500 rows of .../clinc150, split test (all)
"""

from __future__ import annotations

import argparse
import random
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Literal

from ember.data import Examples, load_examples, spread

Pick = Literal["first", "random", "spread"]


@dataclass(frozen=True)
class RowsUsed:
    """One set of rows a benchmark used.

    Attributes:
        role: what for ("timed", "train", "test", "sample" ...).
        source: the ``--data`` given.
        split: the split read; ``None`` for a source without splits (the whole file).
        count: rows used.
        of: rows the split (or file) holds.
        how: how they were chosen: ``all``, ``first N``, ``seeded random N (seed S)``, ``even spread of N``.
    """

    role: str
    source: str
    split: str | None
    count: int
    of: int
    how: str

    def describe(self) -> str:
        """``4,500 of 4,500 rows of ../clinc150, split test (all)``."""
        where = "the whole file (no splits)" if self.split is None else f"split {self.split}"
        return f"{self.count:,} of {self.of:,} rows of {self.source}, {where} ({self.how})"

    def line(self) -> str:
        """:meth:`describe` after the role: ``timed: 4,500 of ...``."""
        return f"{self.role}: {self.describe()}"

    def to_dict(self) -> dict:
        return asdict(self)


def data_options(parser: argparse.ArgumentParser, *, data: str | Path | None, split: str | None = "test",
                 model: bool = True) -> None:
    """Add ``--data``, ``--split``, ``--text-column``, ``--label-column`` (and ``--model``) to a script's parser.

    Args:
        parser: the script's parser.
        data: default ``--data`` (``None``: none, the script has its own rows, e.g. ember's built-in sentences).
        split: named in ``--split``'s help as the split read from the default data (the script passes it to
            :func:`load_rows`); other data is read without a split unless ``--split`` names one.
        model: add ``--model`` too.
    """
    parser.add_argument("--data", default=None if data is None else str(data), help=(
        "CSV/TSV/JSONL/TXT, CLINC150 JSON or folder, saved or hub dataset" + ("" if data is None else f" (default: {data})")))
    parser.add_argument("--split", default=None, help=f"split of --data (default: {split} for the default data; a "
                        "file without splits is read whole)")
    parser.add_argument("--text-column", default=None, help="text column of --data (default: the usual names)")
    parser.add_argument("--label-column", default=None, help="label column of --data (default: the usual names)")
    parser.set_defaults(_default_data=None if data is None else str(data))
    if model:
        parser.add_argument("--model", default=None, help="model folder or hub id (default: packaged all-MiniLM-L6-v2)")


def load_rows(args: argparse.Namespace, role: str, *, data: str | None = None, split: str | None = None,
              default_split: str | None = None, limit: int | None = None, pick: Pick = "first",
              seed: int = 0) -> tuple[Examples, RowsUsed]:
    """Read rows as the script's options say and describe them.

    Args:
        args: the parsed options (from :func:`data_options`).
        role: what the rows are for, as printed.
        data: another source than ``--data`` (``--test-data``, say); same columns.
        split: the split option given for these rows (``--split``, ``--test-split`` ...); ``None``: not given.
        default_split: the split read when none was given and the source is the script's default data (a file
            the user names is read whole unless a split is given: a single file has no splits).
        limit: use at most this many rows, chosen by ``pick``: the first, a seeded random subset (in file
            order; for files grouped by label) or an even spread over the whole split.

    Returns:
        The rows and their :class:`RowsUsed`.
    """
    source = data or args.data
    if split is None and str(source) == getattr(args, "_default_data", None):
        split = default_split
    ex = load_examples(source, split=split, text_column=args.text_column, label_column=args.label_column)
    total = len(ex)
    chosen, how = choose(ex, limit, pick, seed)
    read = split if split is not None else _split_in(ex)
    return chosen, RowsUsed(role, str(source), read, len(chosen), total, how)


def _split_in(ex: Examples) -> str | None:
    """The split a source read by default (CLINC150 and datasets: ``train``; its name ends the source)."""
    named = getattr(ex, "split", None)
    if named:
        return named
    return "train" if ex.source.endswith(":train") else None


def choose(ex: Examples, limit: int | None, pick: Pick = "first", seed: int = 0) -> tuple[Examples, str]:
    """At most ``limit`` rows of ``ex`` (see :func:`load_rows`) and how they were chosen."""
    if limit is None or limit >= len(ex):
        return ex, "all"
    if pick == "first":
        return ex.select(limit), f"first {limit:,}"
    if pick == "spread":
        idx = spread(list(range(len(ex))), limit)
        how = f"even spread of {limit:,}"
    else:
        idx = sorted(random.Random(seed).sample(range(len(ex)), limit))
        how = f"seeded random {limit:,} (seed {seed})"
    labels = None if ex.labels is None else [ex.labels[i] for i in idx]
    return Examples([ex.texts[i] for i in idx], labels, ex.source), how


def announce(*rows: RowsUsed) -> dict:
    """Print one line per set of rows and return them for the script's final JSON line (``"rows"``)."""
    for r in rows:
        print(r.line(), flush=True)
    return {r.role: r.to_dict() for r in rows}


def head_labels(examples: Examples, config, model_name: str) -> tuple[list[int] | None, list[str] | None, str | None]:
    """Class ids of ``examples`` for a model whose Hugging Face ``config`` is given, to measure accuracy with.

    Returns:
        (ids, the head's class names, a note): ``(None, None, note)`` when the model has no classification head
        (fidelity is measured instead), ``(None, None, None)`` for unlabelled data.

    Raises:
        DataError: labels the head does not have (named), or ids past its classes.
    """
    from ember.errors import DataError

    if examples.labels is None:
        return None, None, None
    if not any(a.endswith("ForSequenceClassification") for a in (config.architectures or [])):
        return None, None, ("the model has no classification head; labels are ignored and fidelity against the "
                            "fp32 baseline is measured instead")
    names = [str(config.id2label[i]) for i in range(config.num_labels)]
    if all(isinstance(x, int) for x in examples.labels):
        labels = list(examples.labels)
    else:
        labels = examples.label_ids(names)  # DataError naming unknown labels
    if max(labels) >= config.num_labels or min(labels) < 0:
        raise DataError(
            f"{examples.source} has label ids up to {max(labels)} but {model_name} has a head with "
            f"{config.num_labels} classes; pass data labelled for this model or --label-column"
        )
    return labels, names, None
