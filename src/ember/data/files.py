"""Reading one data file: CSV/TSV with a header row, JSONL, TXT (one text per line), JSON lists of objects.

Each reader returns :class:`~ember.data.examples.Examples` (without a split: a file is one split) or raises a
:class:`~ember.errors.DataError` naming the file, the row and the fix.
"""

from __future__ import annotations

import csv
import json
import math
import warnings
from collections.abc import Sequence
from pathlib import Path

from ember.data.examples import Examples
from ember.errors import DataError, EmberWarning
from ember.fixes import LABEL_COLUMN, TEXT_COLUMN

COLUMN_FIX = {"text": TEXT_COLUMN, "label": LABEL_COLUMN}

TEXT_COLUMNS = ("text", "sentence", "content", "query", "utterance")
LABEL_COLUMNS = ("label", "labels", "intent", "class", "target")
TABLE_SUFFIXES = (".csv", ".tsv", ".jsonl")  # files that can be the splits of a folder (train.csv, test.jsonl ...)
_MISSING = object()


def text_lines(text: str) -> list[str]:
    r"""One text per non-blank line, stripped: how ``.txt`` files and ember's built-in sentences are read.

    Example:
        >>> text_lines("hello\n\n  book a flight \n")
        ['hello', 'book a flight']
    """
    return [line.strip() for line in text.splitlines() if line.strip()]


def read_file(path: Path, name: str, text_column: str | None, label_column: str | None) -> Examples | dict:
    """The examples of a CSV/TSV/JSONL/TXT file or a JSON list of objects; a CLINC-style JSON file's dict of
    splits (``{split: [[text, label], ...]}``) is returned as it is, for the caller to pick a split."""
    suffix = path.suffix.lower()
    if suffix in (".csv", ".tsv"):
        rows, columns = _read_delimited(path, name, suffix)
        return rows_to_examples(rows, columns, text_column, label_column, name)
    if suffix == ".jsonl":
        rows = _read_jsonl(path, name)
        columns = list(dict.fromkeys(k for r in rows for k in r)) if rows else []
        return rows_to_examples(rows, columns, text_column, label_column, name)
    if suffix == ".txt":
        return Examples(text_lines(path.read_text(encoding="utf-8")), None, name)
    if suffix == ".json":
        data = json.loads(path.read_text(encoding="utf-8"))
        if isinstance(data, dict) and all(isinstance(v, list) for v in data.values()):
            return data
        if isinstance(data, list) and data and isinstance(data[0], dict):
            return rows_to_examples(data, list(data[0]), text_column, label_column, name)
        raise DataError(f"{name}: JSON must be CLINC150-style {{split: [[text, label], ...]}} or a list of objects")
    raise DataError(f"{name}: unknown file type {suffix!r}; use .csv, .tsv, .jsonl, .json, .txt or a dataset folder")


def _read_delimited(path: Path, name: str, suffix: str) -> tuple[list[dict], list[str]]:
    with path.open(newline="", encoding="utf-8") as f:
        if suffix == ".tsv":
            reader = csv.DictReader(f, delimiter="\t", quoting=csv.QUOTE_NONE)
        else:
            reader = csv.DictReader(f)
        try:
            rows = list(reader)
        except csv.Error as exc:
            raise _csv_error(exc, name, reader.line_num + 1) from None  # line_num: lines read before the bad one
        return rows, list(reader.fieldnames or [])


def _csv_error(exc: csv.Error, name: str, line: int) -> DataError:
    """csv's "field larger than field limit (131072)" and other parse errors, as ember's, with the line."""
    if "field larger than field limit" in str(exc):
        limit = csv.field_size_limit()
        return DataError(
            f"{name} line {line}: a field is longer than {limit:,} characters, the most a CSV field may hold here. That is "
            "usually a double quote that is never closed, which makes one field run on over the rows after it: "
            "check the quoting near that line. A text really that long: shorten it in the file (a model reads a "
            "few hundred tokens of it at most)."
        )
    return DataError(f"{name} line {line} cannot be read as {'TSV' if name.endswith('.tsv') else 'CSV'}: {exc}")


def _read_jsonl(path: Path, name: str) -> list[dict]:
    rows = []
    with path.open(encoding="utf-8") as f:
        for i, line in enumerate(f, 1):
            if line.strip():
                try:
                    row = json.loads(line)
                except json.JSONDecodeError as exc:
                    raise DataError(f"{name} line {i} is not valid JSON: {exc}") from exc
                if not isinstance(row, dict):
                    raise DataError(f"{name} line {i} is a JSON {type(row).__name__}, not an object; write one "
                                    '{"text": ..., "label": ...} object per line')
                rows.append(row)
    return rows


def _pick(columns: Sequence[str], wanted: str | None, candidates: Sequence[str], what: str, source: str) -> str | None:
    if wanted is not None:
        if wanted not in columns:
            raise DataError(
                f"{source} has no {what} column {wanted!r}; its columns are {list(columns)}. {COLUMN_FIX[what]}.",
                fixes=[COLUMN_FIX[what]],
            )
        return wanted
    for c in candidates:
        if c in columns:
            return c
    return None


def rows_to_examples(rows: list[dict], columns: Sequence[str], text_column, label_column, source: str) -> Examples:
    """Examples from table rows (dicts), the text and label columns picked by name or from the usual names."""
    tcol = _pick(columns, text_column, TEXT_COLUMNS, "text", source)
    if tcol is None:
        raise DataError(
            f"{source} has no text column (looked for {list(TEXT_COLUMNS)}); its columns are {list(columns)}. "
            f"{TEXT_COLUMN}.", fixes=[TEXT_COLUMN]
        )
    lcol = _pick(columns, label_column, LABEL_COLUMNS, "label", source)
    if lcol is None:
        _warn_unnamed_label(columns, tcol, source)
    texts = []
    for i, r in enumerate(rows):
        t = r.get(tcol, _MISSING)
        if t is _MISSING:
            raise DataError(f"{source} row {i} has no {tcol!r} key; give every row its text, or drop the row")
        if t is None or (isinstance(t, float) and t != t):  # None / NaN: a missing cell, not the text "None"
            raise DataError(f"{source} row {i} has no text in column {tcol!r}; drop or fill empty rows")
        texts.append(str(t))
    labels = None if lcol is None else [_label(r, lcol, i, source) for i, r in enumerate(rows)]
    return Examples(texts, labels, source, columns=tuple(columns))


def _warn_unnamed_label(columns: Sequence[str], text_column: str, source: str) -> None:
    """Say so when the one column besides the text is probably the labels under another name (``category``)."""
    others = [c for c in columns if c != text_column]
    if len(others) == 1:
        warnings.warn(
            f"{source} has no label column (looked for {list(LABEL_COLUMNS)}); its columns are {list(columns)}, so the "
            f"examples are read without labels. If {others[0]!r} holds the labels, name it: label_column={others[0]!r} "
            f"(on the command line: --label-column {others[0]}).",
            EmberWarning,
            stacklevel=4,
        )


def _label(row: dict, column: str, i: int, source: str) -> int | str:
    v = row.get(column, _MISSING)
    if v is _MISSING:
        raise DataError(f"{source} row {i} has no {column!r} key while other rows have labels there; give the row "
                        "its label, or drop it")
    if isinstance(v, bool):
        return int(v)
    if isinstance(v, int):
        return v
    s = "" if v is None else str(v).strip()
    if not s:
        raise DataError(f"{source} row {i} has an empty label; drop the row or give it a label")
    if (isinstance(v, float) and math.isnan(v)) or s.lower() == "nan":
        raise DataError(f"{source} row {i} has the label NaN (a missing value, not a class); drop the row or give "
                        "it a label")
    return int(s) if s.lstrip("-").isdigit() else s
