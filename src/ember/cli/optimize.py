"""``ember optimize MODEL --preset NAME --out DIR`` and ``ember autotune MODEL --data ... --budget ...``."""

from __future__ import annotations

from pathlib import Path

import typer

from ember.cli.common import (
    DATA_SWITCHES,
    DEFAULT_MODEL_FIX,
    PAD_TOKEN_SWITCHES,
    console,
    emit_json,
    friendly_errors,
)
from ember.cli.quiet import VerboseOpt, quiet
from ember.fixes import TEXT_COLUMN

# Library phrases naming a Python argument, in these commands' words (see common.friendly_errors): the model is
# the MODEL argument, and --data is read for its texts alone, by the usual column names
SWITCHES = {
    **PAD_TOKEN_SWITCHES,
    **DATA_SWITCHES,
    TEXT_COLUMN: "Rename the column of texts to one of those looked for (this command "
    "has no --text-column)",
    DEFAULT_MODEL_FIX: "give MODEL, a local folder or a hub id",
}


def _load(model: str, task: str):
    from ember.models import load_model

    return load_model(None if model in ("default", "") else model, task=task)  # type: ignore[arg-type]


def _texts(data: Path | None, split: str | None, limit: int) -> list[str] | None:
    if data is None:
        return None
    from ember.data import load_examples

    return list(load_examples(data, split=split).texts)[:limit]


def optimize_cmd(
    model: str | None = typer.Argument(None, help="local folder, hub id, or 'default' (packaged all-MiniLM-L6-v2)"),
    preset: str | None = typer.Option(None, "--preset", "-p", help="preset name (--list shows them)"),
    out: Path | None = typer.Option(None, "--out", "-o", help="directory to write the artifact to"),
    set_: list[str] | None = typer.Option(
        None, "--set", help="change one setting of the preset, KEY=VALUE, repeatable: --set threads=4 --set "
        "tolerance.min_mean_cosine=0.995 (--list --preset NAME shows the settings)"),
    config: Path | None = typer.Option(
        None, "--config", help="build with the config of a saved artifact (its folder) or of a JSON file, instead of --preset"),
    list_: bool = typer.Option(False, "--list", help="list the presets and whether they run here, then exit; "
                               "with --preset, that preset's settings"),
    task: str = typer.Option("embedding", help="'embedding' (AutoModel) or 'classification'"),
    data: Path | None = typer.Option(None, help="verification/calibration texts (CSV/TSV/JSONL/TXT/CLINC JSON)"),
    split: str | None = typer.Option(None, help="split of --data to read"),
    limit: int = typer.Option(256, help="at most this many verification sentences"),
    json_out: bool = typer.Option(False, "--json", help="print a final JSON line"),
    verbose: VerboseOpt = False,
) -> None:
    """Build an optimised artifact of MODEL with a named preset, verify its fidelity, save it to OUT."""
    with quiet(verbose), friendly_errors(SWITCHES):
        from ember.optimize import optimize

        if list_:
            _list(preset, set_ or [], json_out)
            return
        if model is None or out is None:
            raise ValueError("give MODEL and --out DIR (or --list to see the presets)")
        cfg = _config(preset, config, set_ or [])
        net, tok = _load(model, task)
        building = f"building {preset or type(cfg).__name__}"
        with console.status(building) as status:
            art = optimize(net, cfg, tokenizer=tok, sample=_texts(data, split, limit),
                           progress=lambda what: status.update(f"{building}: {what}"))
        art.save(out)
        f = art.fidelity
        console.print(f"[green]saved[/] {out}  size {art.size_bytes / 1e6:.1f} MB  build {art.build_seconds:.1f} s  "
                      f"mean cosine {f.mean_cosine:.6f}  min cosine {f.min_cosine:.6f}")
        if art.speed is not None:
            console.print(f"speed against the original: {art.speed.summary()}")
        for note in art.build_notes:  # what the build measured to choose its own settings
            console.print(f"build: {note}")
        if json_out:
            emit_json({"out": str(out), "preset": preset, "config": cfg.to_dict(), "size_bytes": art.size_bytes,
                       "build_seconds": art.build_seconds, "fidelity": f.to_dict(),
                       "speed": art.speed.to_dict() if art.speed else None, "build_notes": art.build_notes})


def _config(preset: str | None, config: Path | None, pairs: list[str]):
    """The config to build with: a preset or a saved config, with ``--set`` changes."""
    from ember.optimize import config_from_dict
    from ember.optimize import preset as get_preset
    from ember.optimize.config import config_with

    if (preset is None) == (config is None):
        raise ValueError("give exactly one of --preset NAME (--list shows them) and --config PATH")
    if preset is not None:
        return config_with(get_preset(preset), pairs)
    assert config is not None
    saved = _saved_config(config)
    try:
        built = config_from_dict(saved)
    except (TypeError, ValueError) as exc:  # a setting of the wrong type (a number given as text, a list for the tolerance …)
        raise ValueError(
            f"--config {config}: {exc} (`ember optimize --list --preset NAME` shows a preset's settings and their types)"
        ) from None
    return config_with(built, pairs)


_JSON_KINDS = {list: "an array", str: "a string", int: "a number", float: "a number", bool: "true/false", type(None): "null"}


def _saved_config(config: Path) -> dict:
    """The settings (``{"type": ..., setting: value}``) that ``--config`` names: a saved artifact's folder, its
    manifest, or a JSON file holding one config object as the manifest's ``config`` entry does."""
    import json

    from ember.optimize.artifact import MANIFEST
    from ember.optimize.config import CONFIG_TYPES

    expected = (
        "give a saved artifact's folder, or a JSON file holding one object of settings with the engine's 'type', as "
        f"an artifact's {MANIFEST} holds it under 'config' and `ember optimize --json` prints it, e.g. "
        '{"type": "onnxruntime", "quantize": "dynamic", "threads": 4}'
    )
    path = config / MANIFEST if config.is_dir() else config
    if not path.is_file():
        what = f"is a folder without {MANIFEST}, not an ember artifact" if config.is_dir() else "does not exist"
        raise ValueError(f"--config {config} {what}; {expected}")
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise ValueError(f"--config {config}: {path} is not a text file; {expected}") from None
    if not text.strip():
        raise ValueError(f"--config {config}: {path} is empty; {expected}")
    try:
        saved = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ValueError(f"--config {config}: {path} is not JSON ({exc}); {expected}") from None
    settings = saved.get("config", saved) if isinstance(saved, dict) else saved
    if not isinstance(settings, dict):
        where = " under 'config'" if isinstance(saved, dict) else ""
        raise ValueError(
            f"--config {config}: {path} holds {_JSON_KINDS.get(type(settings), type(settings).__name__)}{where}, not "
            f"an object of settings; {expected}"
        )
    if "type" not in settings:
        hint = f" To build preset {settings['preset']!r}, pass --preset instead." if "preset" in settings else ""
        raise ValueError(
            f"--config {config}: the settings in {path} have no 'type', the engine to build with (one of "
            f"{', '.join(sorted(CONFIG_TYPES))}); {expected}.{hint}"
        )
    return settings


def _list(preset: str | None, pairs: list[str], json_out: bool) -> None:
    """Print the presets (or one preset's settings) as a table on stdout."""
    import re

    from rich.console import Console
    from rich.markup import escape
    from rich.table import Table

    from ember.hardware import detect
    from ember.optimize import PRESETS, unavailable
    from ember.optimize import preset as get_preset
    from ember.optimize.config import config_with, settings

    table = Table(show_lines=False)
    if preset is None:
        rows = []
        for name, factory in PRESETS.items():
            cfg = factory()
            why = unavailable(name)
            about = re.split(r":| \(|\. ", (factory.__doc__ or "").replace("``", "").strip())[0].rstrip(".")
            rows.append({"preset": name, "engine": cfg.kind, "here": why or "yes", "bound": cfg.tolerance.min_mean_cosine,
                         "about": about})
        for col in ("preset", "runs here", "min mean cosine", "what it is"):
            table.add_column(col, overflow="fold")
        for r in rows:
            table.add_row(r["preset"], escape(r["here"]), str(r["bound"]), escape(r["about"]))
        cpu = detect()
        table.caption = escape(f"this CPU: {cpu.summary()}")
        result: dict = {"presets": rows, "cpu": cpu.to_dict()}
    else:
        cfg = config_with(get_preset(preset), pairs)
        for col in ("setting", "value", "type"):
            table.add_column(col)
        for k, kind in settings(cfg).items():
            v = getattr(cfg.tolerance, k.removeprefix("tolerance.")) if k.startswith("tolerance.") else getattr(cfg, k)
            table.add_row(k, escape("None" if v is None else str(list(v) if isinstance(v, tuple) else v)), escape(kind))
        result = {"preset": preset, "config": cfg.to_dict()}
    Console().print(table)
    if json_out:
        emit_json(result)


def autotune_cmd(
    model: str = typer.Argument(..., help="local folder, hub id, or 'default'"),
    data: Path = typer.Option(..., help="texts to tune on (CSV/TSV/JSONL/TXT/CLINC JSON)"),
    budget: float = typer.Option(0.999, help="minimum mean cosine vs the original"),
    objective: str = typer.Option("latency", help="'latency' (batch-1 p50) or 'throughput'"),
    split: str | None = typer.Option(None, help="split of --data to read"),
    limit: int = typer.Option(500, help="at most this many sentences"),
    task: str = typer.Option("embedding", help="'embedding' or 'classification'"),
    threads: int | None = typer.Option(None, help="threads for every engine"),
    presets: str | None = typer.Option(
        None, help="comma-separated presets to try, on-request ones included (default: every preset that runs here; "
        "`ember optimize --list` shows them)"),
    out: Path | None = typer.Option(None, help="save the winning artifact here"),
    json_out: bool = typer.Option(False, "--json", help="print a final JSON line"),
    verbose: VerboseOpt = False,
) -> None:
    """Try every preset available here; keep the fastest within the fidelity budget."""
    with quiet(verbose), friendly_errors(SWITCHES):
        from ember.fidelity import Tolerance
        from ember.optimize import preset
        from ember.tune import autotune

        names = [n.strip() for n in (presets or "").split(",") if n.strip()]
        configs = {n: preset(n) for n in names} if presets is not None else None
        if configs == {}:
            raise ValueError("--presets is empty; name at least one preset (`ember optimize --list` shows them)")
        net, tok = _load(model, task)
        texts = _texts(data, split, limit) or []
        result = autotune(net, tok, texts, budget=Tolerance(min_mean_cosine=budget), objective=objective,  # type: ignore[arg-type]
                          threads=threads, configs=configs)
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
