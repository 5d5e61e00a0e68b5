"""``ember optimize MODEL --preset NAME --out DIR`` and ``ember autotune MODEL --data ... --budget ...``."""

from __future__ import annotations

from pathlib import Path

import typer

from ember.cli.common import console, emit_json, friendly_errors


def _load(model: str, task: str):
    from ember.models import load_model

    return load_model(None if model in ("default", "") else model, task=task)  # type: ignore[arg-type]


def _texts(data: Path | None, split: str | None, limit: int) -> list[str] | None:
    if data is None:
        return None
    from ember.data import load_examples

    return list(load_examples(data, split=split).texts)[:limit]


def optimize_cmd(
    model: str = typer.Argument(..., help="local folder, hub id, or 'default' (packaged all-MiniLM-L6-v2)"),
    preset: str = typer.Option(..., "--preset", "-p", help="preset name (see --list)"),
    out: Path = typer.Option(..., "--out", "-o", help="directory to write the artifact to"),
    task: str = typer.Option("embedding", help="'embedding' (AutoModel) or 'classification'"),
    data: Path | None = typer.Option(None, help="verification/calibration texts (CSV/TSV/JSONL/TXT/CLINC JSON)"),
    split: str | None = typer.Option(None, help="split of --data to read"),
    limit: int = typer.Option(256, help="at most this many verification sentences"),
    json_out: bool = typer.Option(False, "--json", help="print a final JSON line"),
) -> None:
    """Build an optimised artifact of MODEL with a named preset, verify its fidelity, save it to OUT."""
    with friendly_errors():
        from ember.optimize import optimize
        from ember.optimize import preset as get_preset

        cfg = get_preset(preset)
        net, tok = _load(model, task)
        art = optimize(net, cfg, tokenizer=tok, sample=_texts(data, split, limit))
        art.save(out)
        f = art.fidelity
        console.print(f"[green]saved[/] {out}  size {art.size_bytes / 1e6:.1f} MB  build {art.build_seconds:.1f} s  "
                      f"mean cosine {f.mean_cosine:.6f}  min cosine {f.min_cosine:.6f}")
        if json_out:
            emit_json({"out": str(out), "preset": preset, "config": cfg.to_dict(), "size_bytes": art.size_bytes,
                       "build_seconds": art.build_seconds, "fidelity": f.to_dict()})


def autotune_cmd(
    model: str = typer.Argument(..., help="local folder, hub id, or 'default'"),
    data: Path = typer.Option(..., help="texts to tune on (CSV/TSV/JSONL/TXT/CLINC JSON)"),
    budget: float = typer.Option(0.999, help="minimum mean cosine vs the original"),
    objective: str = typer.Option("latency", help="'latency' (batch-1 p50) or 'throughput'"),
    split: str | None = typer.Option(None, help="split of --data to read"),
    limit: int = typer.Option(500, help="at most this many sentences"),
    task: str = typer.Option("embedding", help="'embedding' or 'classification'"),
    threads: int | None = typer.Option(None, help="threads for every engine"),
    out: Path | None = typer.Option(None, help="save the winning artifact here"),
    json_out: bool = typer.Option(False, "--json", help="print a final JSON line"),
) -> None:
    """Try every preset available here; keep the fastest within the fidelity budget."""
    with friendly_errors():
        from ember.fidelity import Tolerance
        from ember.optimize.autotune import autotune

        net, tok = _load(model, task)
        texts = _texts(data, split, limit) or []
        result = autotune(net, tok, texts, budget=Tolerance(min_mean_cosine=budget), objective=objective,  # type: ignore[arg-type]
                          threads=threads)
        console.print(result.table())
        saved = None
        if out is not None and result.artifact is not None:
            saved = str(result.artifact.save(out))
            console.print(f"saved {result.best} to {saved}")
        elif out is not None:
            console.print(f"the original model ({result.best}) is the fastest within the budget; nothing saved to {out}")
        if json_out:
            emit_json({**result.to_dict(), "saved": saved})


def register(app: typer.Typer) -> None:
    """Add ``optimize`` and ``autotune`` to the ``ember`` app."""
    app.command("optimize")(optimize_cmd)
    app.command("autotune")(autotune_cmd)
