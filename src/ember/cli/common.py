"""Shared CLI plumbing: JSON result lines and turning ember's errors into clean exits."""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from contextlib import contextmanager

import typer
from rich.console import Console
from rich.markup import escape

from ember.errors import EmberError

console = Console(stderr=True)


def emit_json(result: dict) -> None:
    """Print the final machine-readable result line on stdout."""
    sys.stdout.write(json.dumps(result, default=str) + "\n")
    sys.stdout.flush()


@contextmanager
def friendly_errors() -> Iterator[None]:
    """Show ember's (and data/IO) errors as one red message and exit 2, without a traceback."""
    try:
        yield
    except (EmberError, FileNotFoundError, ImportError, ValueError) as exc:
        console.print(f"[bold red]error:[/] {escape(str(exc))}", soft_wrap=True, highlight=False)
        raise typer.Exit(2) from exc
