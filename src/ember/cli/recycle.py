"""``ember recycle fill|train|eval``."""

from __future__ import annotations

import typer

app = typer.Typer(help="Embedding recycling: store frozen lower layers' states once, train and infer from them.", no_args_is_help=True)
