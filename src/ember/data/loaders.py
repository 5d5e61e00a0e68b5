"""One loader for every text source ember accepts (``--data`` on the command line).

Its messages name the Python arguments (``split=``, ``text_column=`` …); the command line shows its own flags
in their place (``ember.cli.common.DATA_SWITCHES``).

Accepted sources:
- ``file.csv`` / ``file.tsv`` with a header row (text and label columns, names configurable);
- ``file.jsonl``: one JSON object per line;
- ``file.txt``: one text per line, unlabelled (blank lines skipped), like ember's built-in sentences;
- a folder of split files: ``train.csv`` / ``test.csv`` (or ``.tsv``, ``.jsonl``; ``validation``/``dev`` too),
  ``split=`` picking the file;
- the CLINC150 ``data_full.json`` (or the folder holding it): ``{split: [[text, intent], ...]}``;
- a Hugging Face dataset saved with ``save_to_disk`` (a folder), or a hub dataset name.

A single file has no splits: it is read whole whatever the default split (``None`` or ``"train"``), and another
split name is refused rather than ignored (an evaluation would otherwise run on the training rows).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from ember.data.examples import Examples
from ember.data.files import (  # noqa: F401  (LABEL_COLUMNS, TEXT_COLUMNS, text_lines: imported from here too)
    LABEL_COLUMNS,
    TABLE_SUFFIXES,
    TEXT_COLUMNS,
    read_file,
    rows_to_examples,
    text_lines,
)
from ember.errors import DataError
from ember.fixes import SPLIT_EMPTY, SPLIT_NAME, SPLIT_TYPE

SPLIT_NAMES = ("train", "test", "validation", "valid", "val", "dev")  # file stems read as splits in a folder
WHOLE_FILE = "train"  # the split name a single file answers to: it is read whole, as the default split


def _split_name(split: object, source: str, have: Sequence[str] | None = None) -> str:
    """The split to read: ``None`` means ``train``; otherwise a non-empty str, one of ``have`` when the source's
    splits are known (``""`` used to read ``train`` silently, a list failed inside a dict lookup)."""
    if split is None:
        split = "train"
    valid = "" if have is None else f"; it has {sorted(have)}"
    if not isinstance(split, str) or not split.strip():
        raise DataError(
            f"{SPLIT_TYPE}, got {type(split).__name__} {split!r:.40} for {source}{valid}. {SPLIT_NAME}.",
            fixes=[SPLIT_TYPE, SPLIT_NAME],
        )
    if have is not None and split not in have:
        raise DataError(f"{source} has no split {split!r}{valid}. {SPLIT_NAME}.", fixes=[SPLIT_NAME])
    return split


def _whole_file(split: object, source: str, layout: str) -> None:
    """Refuse a split name a single file cannot honour (it has no splits); ``None`` and ``"train"`` read it whole."""
    name = _split_name(split, source)
    if name != WHOLE_FILE:
        raise DataError(
            f"{source} is {layout}, which has no splits, so split {name!r} cannot be honoured: reading the whole file "
            "instead would, say, evaluate on the training rows. Give no split to read the whole file; for splits, "
            f"pass a folder holding one file per split (train.csv, test.csv ...) instead. {SPLIT_NAME} only with "
            "such a source.", fixes=[SPLIT_NAME]
        )


def _clinc(data: dict, split: str | None, source: str) -> Examples:
    split = _split_name(split, source, list(data))
    pairs = data[split]
    return Examples([p[0] for p in pairs], [p[1] for p in pairs], f"{source}:{split}", split=split)


def split_files(folder: Path) -> dict[str, Path]:
    """The split files of ``folder`` by split name (``train.csv`` -> ``train``); empty when it has none.

    Example:
        >>> split_files(Path("/nonexistent"))
        {}
    """
    found: dict[str, Path] = {}
    if not folder.is_dir():
        return found
    for f in sorted(folder.iterdir()):
        if f.is_file() and f.suffix.lower() in TABLE_SUFFIXES and f.stem.lower() in SPLIT_NAMES:
            other = found.setdefault(f.stem.lower(), f)
            if other != f:
                raise DataError(
                    f"{folder} has two files for split {f.stem.lower()!r} ({other.name} and {f.name}); keep one of them"
                )
    return found


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
        split: split name for sources with splits (default ``train``); a single file takes only the default.
        text_column, label_column: column names; by default the first of the usual names present.
        limit: keep only the first ``limit`` examples (:meth:`Examples.describe` says which rows were kept).

    Example:
        >>> ex = load_examples("../shared/data/clinc150", split="test")  # doctest: +SKIP
        >>> ex.describe()  # doctest: +SKIP
        'all 4500 rows of ../shared/data/clinc150/data_full.json:test'
    """
    path = Path(source)
    name = str(source)
    if path.is_dir() and (path / "data_full.json").exists():
        path = path / "data_full.json"
    if path.is_file():
        ex = _from_file(path, name, split, text_column, label_column)
    elif path.is_dir() and split_files(path):
        ex = _from_split_folder(path, split, text_column, label_column)
    elif path.is_dir():
        ex = _hf_dataset(path, split, text_column, label_column, saved=True)
    elif path.suffix or "/" in name and name.startswith((".", "/")):
        raise DataError(f"{name} does not exist; pass a CSV/TSV/JSONL/JSON/TXT file, a dataset folder or a hub dataset name")
    else:
        ex = _hf_dataset(name, split, text_column, label_column, saved=False)
    if len(ex) == 0:
        raise DataError(f"{name} holds no examples; {SPLIT_EMPTY}", fixes=[SPLIT_EMPTY])
    return ex.select(limit)


def _from_file(path: Path, name: str, split, text_column, label_column) -> Examples:
    read = read_file(path, name, text_column, label_column)
    if isinstance(read, dict):  # CLINC-style JSON: its own splits
        return _clinc(read, split, name)
    _whole_file(split, name, f"a single {path.suffix.lower().lstrip('.').upper()} file")
    return read


def _from_split_folder(folder: Path, split, text_column, label_column) -> Examples:
    files = split_files(folder)
    chosen = _split_name(split, str(folder), list(files))
    ex = read_file(files[chosen], str(files[chosen]), text_column, label_column)
    assert isinstance(ex, Examples)  # split files are tables (TABLE_SUFFIXES), never CLINC JSON
    ex.split = chosen
    return ex


def _hf_dataset(source, split, text_column, label_column, *, saved: bool) -> Examples:
    try:
        import datasets
    except ImportError as exc:
        raise ImportError("reading Hugging Face datasets needs the datasets package: pip install 'ember[datasets]'") from exc
    name = str(source)
    chosen = None
    if saved:
        try:
            ds = datasets.load_from_disk(name)
        except FileNotFoundError as exc:
            raise DataError(
                f"{name} is a folder, but not a dataset ember can read: it has no data_full.json, no split files "
                f"({', '.join(s + '.csv' for s in SPLIT_NAMES[:3])} ... or .tsv/.jsonl) and is not a Hugging Face "
                "dataset saved with save_to_disk. Pass a data file, or put the splits in such files."
            ) from exc
        if isinstance(ds, datasets.DatasetDict):
            chosen = _split_name(split, name, list(ds))
            ds = ds[chosen]
        else:
            _whole_file(split, name, "a saved dataset of one split")
    else:
        chosen = _split_name(split, name)
        ds = datasets.load_dataset(name, split=chosen)
    columns = ds.column_names
    rows = ds.to_list()
    # ClassLabel columns stay integers: the ids are the dataset's own, which a trained head expects.
    ex = rows_to_examples(rows, columns, text_column, label_column, f"{name}:{split or 'train'}")
    ex.split = chosen
    return ex
