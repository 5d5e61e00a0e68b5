"""Shared CLI plumbing: JSON result lines and turning ember's errors into clean exits."""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Annotated

import typer
from rich.console import Console
from rich.markup import escape

from ember.errors import EmberError

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


@contextmanager
def friendly_errors() -> Iterator[None]:
    """Show ember's (and data/IO) errors as one red message and exit 2, without a traceback."""
    try:
        yield
    except (EmberError, OSError, ImportError, ValueError) as exc:  # OSError: a file in a folder's place, a read-only disk
        console.print(f"[bold red]error:[/] {escape(str(exc))}", soft_wrap=True, highlight=False)
        raise typer.Exit(2) from exc
