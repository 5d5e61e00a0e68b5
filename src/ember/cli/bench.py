"""``ember bench``: the baseline against every optimised preset, on built-in defaults or your model and data."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from ember.cli.common import (
    DATA_SWITCHES,
    MAX_LENGTH_SWITCHES,
    MODEL_SWITCHES,
    PAD_TOKEN_SWITCHES,
    console,
    emit_json,
    friendly_errors,
)
from ember.cli.quiet import VerboseOpt, quiet

# Library phrases naming a Python argument, in this command's flags (see common.friendly_errors).
SWITCHES = {**PAD_TOKEN_SWITCHES, **DATA_SWITCHES, **MODEL_SWITCHES, **MAX_LENGTH_SWITCHES}

app = typer.Typer(help="Benchmark the model's variants: accuracy or fidelity, latency, throughput, size, memory.")


@app.callback(invoke_without_command=True)
def bench(
    model: Annotated[str | None, typer.Option(help="Model folder or hub id (default: packaged all-MiniLM-L6-v2).")] = None,
    data: Annotated[str | None, typer.Option(help="CSV/TSV/JSONL/TXT/CLINC150 JSON/dataset (default: built-in sentences).")] = None,
    split: Annotated[str | None, typer.Option(help="Split of --data (CLINC150 JSON, datasets).")] = None,
    text_column: Annotated[str | None, typer.Option(help="Text column of --data.")] = None,
    label_column: Annotated[str | None, typer.Option(help="Label column of --data.")] = None,
    limit: Annotated[int | None, typer.Option(min=1, help="Use only the first N examples.")] = None,
    out: Annotated[Path, typer.Option(help="Folder for report.md, report.json and plot.png.")] = Path("ember-bench"),
    batch_size: Annotated[int, typer.Option(min=1, help="Batch size of the throughput runs.")] = 32,
    threads: Annotated[int | None, typer.Option(min=1, help="Torch threads (default: physical cores).")] = None,
    presets: Annotated[str | None, typer.Option(help="Comma-separated presets to compare (default: all available).")] = None,
    latency_samples: Annotated[int, typer.Option(min=1, help="Inputs timed at batch 1.")] = 200,
    repeats: Annotated[int, typer.Option(min=1, help="Throughput runs per mode (median reported).")] = 3,
    max_length: Annotated[int, typer.Option(min=1, help="Tokenizer truncation length.")] = 128,
    json_out: Annotated[bool, typer.Option("--json", help="Print the report as one JSON line on stdout.")] = False,
    verbose: VerboseOpt = False,
) -> None:
    """Compare PyTorch fp32 with every optimised preset available on this machine.

    With no options: the packaged MiniLM-L6 on ember's built-in sentences. Exits 1 when a variant
    fails (its fidelity tolerance or with an error); the reports are written either way.
    """
    with quiet(verbose), friendly_errors(SWITCHES):
        report = _run(model, data, split, text_column, label_column, limit, out, batch_size, threads, presets,
                      latency_samples, repeats, max_length)
    if json_out:
        emit_json(report.to_dict())
    if not report.passed:
        failed = [r.name for r in report.results if not r.passed]
        console.print(f"[bold red]{len(failed)} variant(s) failed:[/] {', '.join(failed)}")
        raise typer.Exit(1)


def _examples(data, split, text_column, label_column, limit):
    """The texts (and labels) to measure on: --data, or ember's built-in sentences."""
    from ember.data import Examples, load_examples
    from ember.data.sample import sample_sentences

    if data is None:
        return Examples(sample_sentences(), None, "ember built-in sample sentences").select(limit)
    return load_examples(data, split=split, text_column=text_column, label_column=label_column, limit=limit)


def _labels(examples, path: str, model_name: str) -> tuple[list[int] | None, list[str] | None]:
    """Class ids (and their names) to measure accuracy with, when the model has a head and the data labels."""
    from transformers import AutoConfig

    from ember.bench.rows import head_labels

    labels, names, note = head_labels(examples, AutoConfig.from_pretrained(path), model_name)
    if note is not None:
        console.print(f"[yellow]note:[/] {note}")
    return labels, names


def _plans(model, tokenizer, sample: list[str], presets: str | None):
    """The presets to compare: every one available here, or those named by --presets."""
    from ember.bench import sweep
    from ember.bench.harness import BenchError

    plans = sweep.preset_plans(model, tokenizer, sample)
    if presets is not None:
        wanted = [p.strip() for p in presets.split(",") if p.strip()]
        known = {p.name for p in plans}
        unknown = [w for w in wanted if w not in known]
        if unknown:
            raise BenchError(f"unknown preset(s) {unknown} in --presets; available here: {sorted(known) or 'none'}")
        plans = [p for p in plans if p.name in wanted]
    if not plans:
        console.print("[yellow]note:[/] no optimised preset is available on this machine; measuring the baseline only")
    return plans


def _run(model_id, data, split, text_column, label_column, limit, out, batch_size, threads, presets,
         latency_samples, repeats, max_length):
    import time

    import psutil
    import torch

    from ember.bench import BenchConfig, PerformanceBenchmark, Variant
    from ember.bench.memory import peak_rss_mb, rss_mb
    from ember.bench.sweep import BASELINE, sweep
    from ember.models import DEFAULT_MODEL, default_model_path, load_model

    threads = threads or psutil.cpu_count(logical=False) or 1
    torch.set_num_threads(threads)
    examples = _examples(data, split, text_column, label_column, limit)
    path = str(default_model_path()) if model_id is None else model_id
    model_name = DEFAULT_MODEL if model_id is None else model_id
    labels, label_names = _labels(examples, path, model_name)
    console.print(f"[bold]ember bench[/] · model {model_name} · {len(examples)} texts from {examples.source} · "
                  f"{threads} threads")
    t0 = time.perf_counter()
    model, tokenizer = load_model(path, "classification" if labels is not None else "embedding")
    load_seconds, loaded = time.perf_counter() - t0, (rss_mb(), peak_rss_mb())
    plans = _plans(model, tokenizer, examples.texts[:256], presets)
    config = BenchConfig(batch_size=batch_size, latency_samples=latency_samples, warmup=10,
                         throughput_examples=2000, threads=threads, repeats=repeats, max_length=max_length)
    bench = PerformanceBenchmark(tokenizer, examples.texts, labels, config, label_names=label_names,
                                 model_name=model_name, data_name=examples.source)
    baseline = Variant(BASELINE, model, build_seconds=load_seconds, reference=True)
    report = sweep(bench, baseline, plans, load_rss=loaded).report
    paths = report.write(out)
    _print_table(report)
    for kind, p in paths.items():
        console.print(f"{kind:>8}: {p}")
    return report


def _print_table(report) -> None:
    """A compact table that fits 80 columns; report.md has every column, and failures are spelled out below."""
    from rich import box
    from rich.table import Table

    def f(v, fmt):
        return "—" if v is None else format(v, fmt)

    labelled = report.labelled and any(r.accuracy is not None for r in report.results)
    table = Table(title=report.machine.summary(), title_style="dim", box=box.SIMPLE_HEAD, pad_edge=False)
    table.add_column("variant", overflow="fold", min_width=14)
    for h in ("accuracy" if labelled else "cosine", "p50 ms", "p99 ms", "speed-up", "ex/s", "MB", "RSS MB"):
        table.add_column(h, justify="right", no_wrap=True)
    table.add_column("status", no_wrap=True)
    for r in report.results:
        quality = r.accuracy if labelled else (None if r.fidelity is None else r.fidelity.mean_cosine)
        lat = r.latency_ms or {}
        speed = report.speedup(r)
        table.add_row(
            f"{r.name} (ref)" if r.reference else r.name,
            f(quality, ".4f" if labelled else ".6f"), f(lat.get("p50"), ".2f"), f(lat.get("p99"), ".2f"),
            "—" if speed is None else f"{speed:.2f}x", f(r.throughput, ".0f"), f(r.size_mb, ".1f"),
            f(r.peak_rss_mb, ".0f"), "ok" if r.passed else "FAILED", style=None if r.passed else "red",
        )
    console.print(table)
    for r in report.results:
        if not r.passed:
            console.print(f"[red]{r.name}[/]: {r.status}")
