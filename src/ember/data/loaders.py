"""One loader for every text source ember accepts (``--data`` on the command line).

Its messages name the Python arguments (``split=``, ``text_column=`` …); the command line shows its own flags
in their place (``ember.cli.common.DATA_SWITCHES``).

Accepted sources:
- ``file.csv`` / ``file.tsv`` with a header row (text and label columns, names configurable);
- ``file.jsonl``: one JSON object per line;
- ``file.txt``: one text per line, unlabelled (blank lines skipped), like ember's built-in sentences;
- the CLINC150 ``data_full.json`` (or the folder holding it): ``{split: [[text, intent], ...]}``;
- a Hugging Face dataset saved with ``save_to_disk`` (a folder), or a hub dataset name.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from ember.data.labels import encode_known_labels, encode_labels
from ember.errors import DataError

TEXT_COLUMNS = ("text", "sentence", "content", "query", "utterance")
LABEL_COLUMNS = ("label", "labels", "intent", "class", "target")


@dataclass
class Examples:
    """Texts with optional labels (strings or ints), in dataset order.

    Example:
        >>> ex = Examples(["good", "bad"], ["pos", "neg"])
        >>> ex.label_names(), ex.label_ids()
        (['neg', 'pos'], [1, 0])
    """

    texts: list[str]
    labels: list[int | str] | None = None
    source: str = ""

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

    def select(self, n: int | None) -> Examples:
        """The first ``n`` examples (all when ``n`` is None)."""
        if n is None:
            return self
        if n < 0:
            raise ValueError(f"limit must be >= 0 (the first N examples), got {n}")
        return Examples(self.texts[:n], None if self.labels is None else self.labels[:n], self.source)


def _pick(columns: Sequence[str], wanted: str | None, candidates: Sequence[str], what: str, source: str) -> str | None:
    if wanted is not None:
        if wanted not in columns:
            raise DataError(
                f"{source} has no {what} column {wanted!r}; its columns are {list(columns)}. "
                f"Pass the right name: {what}_column='NAME'."
            )
        return wanted
    for c in candidates:
        if c in columns:
            return c
    return None


def _rows_to_examples(rows: list[dict], columns: Sequence[str], text_column, label_column, source: str) -> Examples:
    tcol = _pick(columns, text_column, TEXT_COLUMNS, "text", source)
    if tcol is None:
        raise DataError(
            f"{source} has no text column (looked for {list(TEXT_COLUMNS)}); its columns are {list(columns)}. "
            "Pass the right name: text_column='NAME'."
        )
    lcol = _pick(columns, label_column, LABEL_COLUMNS, "label", source)
    texts = []
    for i, r in enumerate(rows):
        t = r[tcol]
        if t is None or (isinstance(t, float) and t != t):  # None / NaN: a missing cell, not the text "None"
            raise DataError(f"{source} row {i} has no text in column {tcol!r}; drop or fill empty rows")
        texts.append(str(t))
    labels = None if lcol is None else [_label(r[lcol], i, source) for i, r in enumerate(rows)]
    return Examples(texts, labels, source)


def _label(v, row: int, source: str) -> int | str:
    if isinstance(v, bool):
        return int(v)
    if isinstance(v, int):
        return v
    s = "" if v is None else str(v).strip()
    if not s:
        raise DataError(f"{source} row {row} has an empty label; drop the row or give it a label")
    return int(s) if s.lstrip("-").isdigit() else s


def _split_name(split: object, source: str, have: Sequence[str] | None = None) -> str:
    """The split to read: ``None`` means ``train``; otherwise a non-empty str, one of ``have`` when the source's
    splits are known (``""`` used to read ``train`` silently, a list failed inside a dict lookup)."""
    if split is None:
        split = "train"
    valid = "" if have is None else f"; it has {sorted(have)}"
    if not isinstance(split, str) or not split.strip():
        raise DataError(
            f"split must be a split name (a non-empty str, or None for 'train'), got {type(split).__name__} "
            f"{split!r:.40} for {source}{valid}. Pass split='NAME'."
        )
    if have is not None and split not in have:
        raise DataError(f"{source} has no split {split!r}{valid}. Pass split='NAME'.")
    return split


def _clinc(data: dict, split: str | None, source: str) -> Examples:
    split = _split_name(split, source, list(data))
    pairs = data[split]
    return Examples([p[0] for p in pairs], [p[1] for p in pairs], f"{source}:{split}")


def text_lines(text: str) -> list[str]:
    r"""One text per non-blank line, stripped: how ``.txt`` files and ember's built-in sentences are read.

    Example:
        >>> text_lines("hello\n\n  book a flight \n")
        ['hello', 'book a flight']
    """
    return [line.strip() for line in text.splitlines() if line.strip()]


def load_examples(
    source: str | Path,
    *,
    split: str | None = None,
    text_column: str | None = None,
    label_column: str | None = None,
    limit: int | None = None,
) -> Examples:
    """Read labelled (or unlabelled) texts from a file, folder, saved dataset or hub name.

    Args:
        source: path or hub dataset name (see the module docstring for the formats).
        split: split name for CLINC150 JSON (default ``train``) and datasets (default ``train``).
        text_column, label_column: column names; by default the first of the usual names present.
        limit: keep only the first ``limit`` examples.

    Example:
        >>> ex = load_examples("../shared/data/clinc150", split="test")  # doctest: +SKIP
    """
    path = Path(source)
    name = str(source)
    if path.is_dir() and (path / "data_full.json").exists():
        path = path / "data_full.json"
    if path.is_file():
        suffix = path.suffix.lower()
        if suffix in (".csv", ".tsv"):
            with path.open(newline="", encoding="utf-8") as f:
                if suffix == ".tsv":
                    reader = csv.DictReader(f, delimiter="\t", quoting=csv.QUOTE_NONE)
                else:
                    reader = csv.DictReader(f)
                rows = list(reader)
                columns = reader.fieldnames or []
            ex = _rows_to_examples(rows, columns, text_column, label_column, name)
        elif suffix == ".jsonl":
            rows = []
            with path.open(encoding="utf-8") as f:
                for i, line in enumerate(f, 1):
                    if line.strip():
                        try:
                            rows.append(json.loads(line))
                        except json.JSONDecodeError as exc:
                            raise DataError(f"{name} line {i} is not valid JSON: {exc}") from exc
            columns = list(rows[0]) if rows else []
            ex = _rows_to_examples(rows, columns, text_column, label_column, name)
        elif suffix == ".txt":
            ex = Examples(text_lines(path.read_text(encoding="utf-8")), None, name)
        elif suffix == ".json":
            data = json.loads(path.read_text(encoding="utf-8"))
            if isinstance(data, dict) and all(isinstance(v, list) for v in data.values()):
                ex = _clinc(data, split, name)
            elif isinstance(data, list) and data and isinstance(data[0], dict):
                ex = _rows_to_examples(data, list(data[0]), text_column, label_column, name)
            else:
                raise DataError(f"{name}: JSON must be CLINC150-style {{split: [[text, label], ...]}} or a list of objects")
        else:
            raise DataError(f"{name}: unknown file type {suffix!r}; use .csv, .tsv, .jsonl, .json, .txt or a dataset folder")
    elif path.is_dir():
        ex = _hf_dataset(path, split, text_column, label_column, saved=True)
    elif path.suffix or "/" in name and name.startswith((".", "/")):
        raise DataError(f"{name} does not exist; pass a CSV/TSV/JSONL/JSON/TXT file, a dataset folder or a hub dataset name")
    else:
        ex = _hf_dataset(name, split, text_column, label_column, saved=False)
    _split_name(split, name)  # sources without splits take any name; those with splits checked it against theirs
    if len(ex) == 0:
        raise DataError(f"{name} holds no examples; check the file and the split= argument")
    return ex.select(limit)


def _hf_dataset(source, split, text_column, label_column, *, saved: bool) -> Examples:
    try:
        import datasets
    except ImportError as exc:
        raise ImportError("reading Hugging Face datasets needs the datasets package: pip install 'ember[datasets]'") from exc
    name = str(source)
    if saved:
        ds = datasets.load_from_disk(name)
        if isinstance(ds, datasets.DatasetDict):
            ds = ds[_split_name(split, name, list(ds))]
    else:
        ds = datasets.load_dataset(name, split=_split_name(split, name))
    columns = ds.column_names
    rows = ds.to_list()
    # ClassLabel columns stay integers: the ids are the dataset's own, which a trained head expects.
    return _rows_to_examples(rows, columns, text_column, label_column, f"{name}:{split or 'train'}")
