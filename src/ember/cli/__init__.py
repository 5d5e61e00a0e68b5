"""The ``ember`` command: a thin typer layer over the library's verbs (heavy imports inside commands)."""

from __future__ import annotations

import typer

from ember.cli.bench import app as bench_app
from ember.cli.cache import app as cache_app
from ember.cli.compress import register as register_compress
from ember.cli.optimize import register as register_optimize
from ember.cli.predict import register as register_predict
from ember.cli.recycle import app as recycle_app
from ember.cli.store import app as store_app

app = typer.Typer(
    name="ember",
    help="Cheap fine-tuning and fast serving for transformer encoders.",
    no_args_is_help=True,
    pretty_exceptions_show_locals=False,
)
app.add_typer(recycle_app, name="recycle")
app.add_typer(bench_app, name="bench")
app.add_typer(cache_app, name="cache")
app.add_typer(store_app, name="store")
register_optimize(app)
register_predict(app)
register_compress(app)


def main() -> None:
    app()
