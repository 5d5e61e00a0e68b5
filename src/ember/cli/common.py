"""Shared CLI plumbing: JSON result lines and turning ember's errors into clean exits."""

from __future__ import annotations

import json
import sys
import warnings
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import Annotated

import typer
from rich.console import Console
from rich.markup import escape

from ember.errors import EmberError, EmberWarning

console = Console(stderr=True)

# Options several commands share, declared once.
ModelOpt = Annotated[str | None, typer.Option("--model", help="Local folder or hub id (default: packaged all-MiniLM-L6-v2).")]
DataOpt = Annotated[str, typer.Option("--data", help="CSV/TSV, JSONL, TXT, CLINC150 JSON, saved HF dataset folder or hub name.")]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print a final machine-readable JSON line.")]
TextCol = Annotated[str | None, typer.Option("--text-column", help="Text column name.")]
LabelCol = Annotated[str | None, typer.Option("--label-column", help="Label column name.")]
LimitOpt = Annotated[int | None, typer.Option("--limit", help="Use only the first N examples.")]
MaxLenOpt = Annotated[int | None, typer.Option("--max-length", help="Truncation length in tokens.")]


def emit_json(result: dict) -> None:
    """Print the final machine-readable result line on stdout."""
    sys.stdout.write(json.dumps(result, default=str) + "\n")
    sys.stdout.flush()


# The library's messages name the Python argument that fixes them (allow_empty=True, readonly=True …), which a
# command line user cannot pass. Each command maps those phrases to its own flags (``friendly_errors(switches)``);
# the keys are exact phrases of library messages, and tests/cli checks that each still occurs there.
STORE_WRITE_SWITCHES: dict[str, str] = {
    # the CLI never sets a size limit: an LMDB store grows until the disk is full
    "free disk space (or raise max_size)": "free disk space",
    # another process holds the write lock (a fill already falls back to reading when it has nothing to write)
    "open the store read-only to read what is committed": "read what is committed with a command that does not "
    "write the store",
}
# ember.models.resolve_max_length names its argument; every command with --max-length rewords it
MAX_LENGTH_SWITCHES: dict[str, str] = {"max_length=": "--max-length "}
WRITABLE_LOCATION = "Pass a writable location, or open the existing store with readonly=True to train or infer from it"
ALLOW_EMPTY = "pass allow_empty=True"
# ember.data.load_examples names its arguments; every command that reads --data has these flags
DATA_SWITCHES: dict[str, str] = {
    "split must be a split name (a non-empty str, or None for 'train')": "--split must name a split",
    "Pass split='NAME'": "Pass --split NAME",
    "check the file and the split= argument": "check the file and --split",
    "Pass the right name: text_column='NAME'": "Pass the right name: --text-column NAME",
    "Pass the right name: label_column='NAME'": "Pass the right name: --label-column NAME",
}
# ember's default model without its package (ember.models.default_model_path)
DEFAULT_MODEL_FIX = "load a local folder or a hub id instead: load_model(path)"
MODEL_SWITCHES: dict[str, str] = {DEFAULT_MODEL_FIX: "pass --model with a local folder or a hub id"}
# ember.models.check_pad_token's fix: a command line user hands over no tokenizer, the model folder's is used
PAD_TOKEN_SWITCHES: dict[str, str] = {
    "Give it one first: ": "Give the model folder's tokenizer one: load it, run ",
    ", or pass a tokenizer that has a pad token": ", then save it to the folder (tokenizer.save_pretrained(folder))",
}


def cli_wording(message: str, switches: Mapping[str, str]) -> str:
    """``message`` with each Python phrase of ``switches`` replaced by its command line wording.

    Example:
        >>> cli_wording("example 3 has an empty text; pass allow_empty=True", {ALLOW_EMPTY: "pass --allow-empty"})
        'example 3 has an empty text; pass --allow-empty'
    """
    for python, cli in switches.items():
        message = message.replace(python, cli)
    return message


@contextmanager
def shown_warnings() -> Iterator[None]:
    """Show ember's warnings (:class:`~ember.errors.EmberWarning`) as one yellow line each, not as Python's
    ``file:line: EmberWarning: ...`` with the source line; other libraries' warnings pass through as they were."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", EmberWarning)
        try:
            yield
        finally:
            for w in caught:
                if issubclass(w.category, EmberWarning):
                    console.print(f"[bold yellow]warning:[/] {escape(str(w.message))}", soft_wrap=True, highlight=False)
                else:
                    warnings.showwarning(w.message, w.category, w.filename, w.lineno)


@contextmanager
def friendly_errors(switches: Mapping[str, str] | None = None) -> Iterator[None]:
    """Show ember's (and data/IO) errors as one red message and exit 2, without a traceback.

    Args:
        switches: phrases of library messages that name a Python argument, mapped to the command's own flags
            (see :data:`STORE_WRITE_SWITCHES`).
    """
    try:
        yield
    except (EmberError, OSError, ImportError, ValueError) as exc:  # OSError: a file in a folder's place, a read-only disk
        message = cli_wording(str(exc), switches or {})
        console.print(f"[bold red]error:[/] {escape(message)}", soft_wrap=True, highlight=False)
        raise typer.Exit(2) from exc
