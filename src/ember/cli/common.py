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

from ember import fixes
from ember.errors import EmberError, EmberWarning, Fix

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


# ember's messages name the Python argument that fixes them (allow_empty=True, readonly=True …), which a command
# line user cannot pass. Errors carry those ways out as data (ember.fixes, EmberError.fixes); each command maps
# them to its own flags and friendly_errors renders the error with that table.
STORE_WRITE_SWITCHES: dict[Fix, str] = {
    # the CLI never sets a size limit: an LMDB store grows until the disk is full
    fixes.FREE_DISK: "free disk space",
    # another process holds the write lock (a fill already falls back to reading when it has nothing to write)
    fixes.READ_COMMITTED: "read what is committed with a command that does not write the store",
}
MAX_LENGTH_SWITCHES: dict[Fix, str] = {fixes.MAX_LENGTH: "--max-length "}
WRITABLE_LOCATION = fixes.WRITABLE_LOCATION
ALLOW_EMPTY = fixes.ALLOW_EMPTY
# ember.data.load_examples names its arguments; every command that reads --data has these flags
DATA_SWITCHES: dict[Fix, str] = {
    fixes.SPLIT_TYPE: "--split must name a split",
    fixes.SPLIT_NAME: "Pass --split NAME",
    fixes.SPLIT_EMPTY: "check the file and --split",
    fixes.TEXT_COLUMN: "Pass the right name: --text-column NAME",
    fixes.LABEL_COLUMN: "Pass the right name: --label-column NAME",
}
# ember's default model without its package (ember.models.default_model_path)
DEFAULT_MODEL_FIX = fixes.PACKAGED_MODEL
MODEL_SWITCHES: dict[Fix, str] = {DEFAULT_MODEL_FIX: "pass --model with a local folder or a hub id"}
# ember.models.check_pad_token's fix: a command line user hands over no tokenizer, the model folder's is used
PAD_TOKEN_SWITCHES: dict[Fix, str] = {
    fixes.PAD_TOKEN_GIVE: "Give the model folder's tokenizer one: load it, run ",
    fixes.PAD_TOKEN_PASS: ", then save it to the folder (tokenizer.save_pretrained(folder))",
}


def cli_wording(error: BaseException, switches: Mapping[Fix, str]) -> str:
    """``error``'s message with each of its fixes (:attr:`~ember.errors.EmberError.fixes`) in command line words;
    an error from elsewhere (an OSError, say) as it is.

    Example:
        >>> from ember.errors import DataError
        >>> err = DataError(f"example 3 has an empty text; {ALLOW_EMPTY}", fixes=[ALLOW_EMPTY])
        >>> cli_wording(err, {ALLOW_EMPTY: "pass --allow-empty"})
        'example 3 has an empty text; pass --allow-empty'
    """
    return error.render(switches) if isinstance(error, EmberError) else str(error)


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
def friendly_errors(switches: Mapping[Fix, str] | None = None) -> Iterator[None]:
    """Show ember's (and data/IO) errors as one red message and exit 2, without a traceback.

    Args:
        switches: the fixes (:mod:`ember.fixes`) that name a Python argument, mapped to the command's own
            flags (see :data:`STORE_WRITE_SWITCHES`).
    """
    try:
        yield
    except (EmberError, OSError, ImportError, ValueError) as exc:  # OSError: a file in a folder's place, a read-only disk
        message = cli_wording(exc, switches or {})
        console.print(f"[bold red]error:[/] {escape(message)}", soft_wrap=True, highlight=False)
        raise typer.Exit(2) from exc
