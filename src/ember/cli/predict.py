"""``ember predict``: score a data file with an optimised artifact or a model, here or on Ray, into Parquet/JSONL."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from ember.cli.common import (
    DATA_SWITCHES,
    MAX_LENGTH_SWITCHES,
    MODEL_SWITCHES,
    DataOpt,
    JsonOpt,
    LabelCol,
    LimitOpt,
    MaxLenOpt,
    TextCol,
    console,
    emit_json,
    friendly_errors,
)
from ember.cli.quiet import VerboseOpt, quiet
from ember.cli.ray_options import RAY_SWITCHES, RayOpt, WorkersOpt, ray_executor

# --out's suffix is checked here (before the library's own check), so only fixes of the layers below are worded
PREDICT_SWITCHES = {**DATA_SWITCHES, **MODEL_SWITCHES, **MAX_LENGTH_SWITCHES, **RAY_SWITCHES}
TASKS = ("embedding", "classification")


def predict_cmd(
    data: DataOpt,
    out: Annotated[Path, typer.Option("--out", "-o", help="Output file: .parquet or .jsonl (id, text, label, then "
                                      "embedding, or logits and prediction).")],
    model: Annotated[str | None, typer.Argument(help="Optimised artifact folder (ember optimize --out), model folder "
                                                "or hub id; default: the packaged all-MiniLM-L6-v2.")] = None,
    split: Annotated[str | None, typer.Option("--split", help="Split of CLINC150 JSON / HF dataset.")] = None,
    text_column: TextCol = None,
    label_column: LabelCol = None,
    limit: LimitOpt = None,
    batch_size: Annotated[int, typer.Option("--batch-size", help="Texts per batch (length-sorted).")] = 32,
    max_length: MaxLenOpt = None,
    task: Annotated[str | None, typer.Option("--task", help="For a plain model: 'embedding' (mean-pooled) or "
                                             "'classification' (logits); default from the model's config.")] = None,
    ray: RayOpt = None,
    workers: WorkersOpt = None,
    verbose: VerboseOpt = False,
    json_out: JsonOpt = False,
) -> None:
    """Embeddings or logits of every row of --data, written to --out with the rows' ids and texts."""
    with quiet(verbose), friendly_errors(PREDICT_SWITCHES):
        if task is not None and task not in TASKS:
            raise ValueError(f"--task {task!r} is not one of {', '.join(TASKS)}")
        if out.suffix.lower() not in (".parquet", ".jsonl"):
            raise ValueError(f"--out {out} must end in .parquet or .jsonl")
        if model is not None and Path(model).is_file():
            raise ValueError(f"{model} is a file; pass an artifact folder, a model folder or a hub id")
        executor = ray_executor(ray, workers, verbose)
        from ember.data import load_examples
        from ember.scale.predict import predict

        examples = load_examples(data, split=split, text_column=text_column, label_column=label_column, limit=limit)
        preds = predict(None if model in (None, "default") else model, examples, task=task,  # type: ignore[arg-type]
                        batch_size=batch_size, max_length=max_length, executor=executor)
        preds.write(out)
        summary = preds.summary()
        console.print(f"scored {summary['examples']} examples ({preds.kind}, {summary['dim']} values each) in "
                      f"{preds.seconds:.1f}s, {summary['examples_per_s']:.0f}/s; wrote {out}")
        if json_out:
            ray_info = None if executor is None else {**executor.cluster.to_dict(), "workers": executor.config.workers}
            emit_json({"command": "predict", "model": model or "default", "out": str(out), **summary, "ray": ray_info})


def register(app: typer.Typer) -> None:
    """Add ``predict`` to the ``ember`` app."""
    app.command("predict")(predict_cmd)
