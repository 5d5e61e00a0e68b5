"""``ember store verify``: check every entry of a store (recycling states, an encoder cache, teacher outputs)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from ember.cli.common import JsonOpt, console, emit_json, friendly_errors

app = typer.Typer(help="Stores on disk: check them.", no_args_is_help=True)


@app.command("verify")
def verify_cmd(
    path: Annotated[Path, typer.Argument(help="The store's folder (an encoder cache: one of its encoder folders).")],
    backend: Annotated[str | None, typer.Option("--backend", help="lmdb or leveldb (default: found from the files).")] = None,
    timeout: Annotated[float | None, typer.Option("--timeout", help="Seconds the check may take.")] = None,
    json_out: JsonOpt = False,
) -> None:
    """Read every entry and record and check it (checksums, key order, lookups, counts); exit 1 when damaged.

    The walk runs in a child process, so damage that makes the backend abort is reported, not a crash.
    """
    with friendly_errors():
        from ember.store.verify import verify_store

        report = verify_store(path, backend, timeout=timeout)
    style = "green" if report.ok else "bold red"
    console.print(f"[{style}]{'ok' if report.ok else 'damaged'}:[/] {report.summary()}", soft_wrap=True, highlight=False,
                  markup=True)
    if json_out:
        emit_json({"command": "store verify", **report.to_dict()})
    if not report.ok:
        raise typer.Exit(1)
