"""``ember distill | prune | qat | calibrate``: the compression API on the command line.

Each command stores the teacher's outputs (``--store DIR`` keeps them for the next run; without it they live in
memory), trains, saves the result with :func:`ember.compress.save_compressed` to ``--out`` and, with
``--optimize PRESET``, builds and saves the served artifact beside it (``OUT/optimized``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from ember.cli.common import (
    DATA_SWITCHES,
    MAX_LENGTH_SWITCHES,
    STORE_WRITE_SWITCHES,
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

SWITCHES = {
    **STORE_WRITE_SWITCHES,
    **DATA_SWITCHES,
    **MAX_LENGTH_SWITCHES,
    "pass DistillConfig(project_hidden=True) to learn a projection, or cosine_weight=0": "pass --cosine-weight 0",
    "fill it with TeacherConfig(hidden_layers=": "fill it with --hidden-layers (TeacherConfig(hidden_layers=",
}

SplitOpt = Annotated[str | None, typer.Option("--split", help="Split of CLINC150 JSON / HF dataset to train on (default train).")]
StoreOpt = Annotated[Path | None, typer.Option("--store", help="Teacher-output store folder, reused by later runs "
                                                "(default: in memory, computed again next time).")]
OutOpt = Annotated[Path, typer.Option("--out", help="Folder for the compressed model.")]
EpochsOpt = Annotated[int, typer.Option("--epochs", help="Training epochs.")]
LrOpt = Annotated[float, typer.Option("--lr", help="AdamW learning rate.")]
AlphaOpt = Annotated[float, typer.Option("--alpha", help="Weight of the hard-label loss (1 - alpha: the teacher's).")]
TempOpt = Annotated[float, typer.Option("--temperature", help="Softmax temperature of the soft targets.")]
BatchOpt = Annotated[int, typer.Option("--batch-size", help="Training batch size.")]
OptimizeOpt = Annotated[str | None, typer.Option("--optimize", help="Also build and save the served artifact with this "
                                                 "ember.optimize preset (e.g. onnx-int8) in OUT/optimized.")]
Int8EmbOpt = Annotated[bool, typer.Option("--int8-embeddings", help="Store the embedding tables as int8 rows in the "
                                          "optimized artifact (with --optimize).")]


def _examples(data, split, text_column, label_column, limit):
    from ember.data import load_examples

    ex = load_examples(data, split=split, text_column=text_column, label_column=label_column, limit=limit)
    if ex.labels is None:
        raise ValueError(f"{data} has no labels; distillation trains on labelled data (--label-column)")
    return ex


def _teacher(path: str, store: Path | None, max_length: int | None, hidden_layers: str | None = None):
    from ember.compress import Teacher, TeacherConfig, load_compressed

    model, tok = load_compressed(path)
    layers = tuple(int(x) for x in hidden_layers.split(",") if x.strip()) if hidden_layers else ()
    return Teacher(model, tok, store, TeacherConfig(hidden_layers=layers, max_length=max_length))


def _build(model, tok, optimize: str, int8_embeddings: bool, sample):
    """The served artifact of ``model`` (a copy, with int8 embedding tables if asked)."""
    import copy

    from ember.compress import quantize_embeddings
    from ember.optimize import optimize as build
    from ember.optimize import preset

    served = copy.deepcopy(model)
    if int8_embeddings:
        quantize_embeddings(served)
    return build(served, preset(optimize), tokenizer=tok, sample=list(sample)[:128])


def _save(model, tok, out: Path, info: dict, optimize: str | None, int8_embeddings: bool, sample) -> dict:
    """Save the model (and the served artifact); returns what to report."""
    from ember.compress import save_compressed

    save_compressed(model, out, tok, info=info)
    result = {"out": str(out), "parameters": sum(p.numel() for p in model.parameters())}
    if optimize:
        artifact = _build(model, tok, optimize, int8_embeddings, sample)
        artifact.save(out / "optimized")
        result["optimized"] = {"preset": optimize, "out": str(out / "optimized"), "size_mb": artifact.size_bytes / 1e6,
                               "fidelity": artifact.fidelity.to_dict() if artifact.fidelity else None}
    return result


def distill_cmd(
    teacher: Annotated[str, typer.Option("--teacher", help="Fine-tuned teacher folder (a classifier).")],
    data: DataOpt,
    out: OutOpt,
    layers: Annotated[str, typer.Option("--layers", help="Teacher layers the student keeps: 0,2,4 | every-other | first:K.")] = "every-other",
    split: SplitOpt = None,
    store: StoreOpt = None,
    preset: Annotated[str, typer.Option("--preset", help="Distillation preset: default, book, distilbert or plain.")] = "default",
    alpha: Annotated[float | None, typer.Option("--alpha", help="Weight of the hard-label loss (default: the preset's).")] = None,
    temperature: Annotated[float | None, typer.Option("--temperature", help="Soft-target temperature (default: the preset's).")] = None,
    epochs: Annotated[int | None, typer.Option("--epochs", help="Training epochs (default: the preset's).")] = None,
    lr: Annotated[float | None, typer.Option("--lr", help="Learning rate (default: the preset's).")] = None,
    batch_size: BatchOpt = 32,
    cosine_weight: Annotated[float | None, typer.Option("--cosine-weight", help="Weight of the hidden-state cosine loss.")] = None,
    hidden_layers: Annotated[str | None, typer.Option("--hidden-layers", help="Teacher hidden states to store, e.g. 6.")] = None,
    trim_vocab: Annotated[bool, typer.Option("--trim-vocab", help="Keep only the embedding rows of the tokens the data uses.")] = False,
    search_trials: Annotated[int, typer.Option("--search-trials", help="Choose alpha, T, lr, epochs with Optuna first "
                                               "(this many trials, scored on --val-split).")] = 0,
    val_split: Annotated[str | None, typer.Option("--val-split", help="Split scoring the search's trials.")] = None,
    optimize: OptimizeOpt = None,
    int8_embeddings: Int8EmbOpt = False,
    max_length: MaxLenOpt = None,
    text_column: TextCol = None,
    label_column: LabelCol = None,
    limit: LimitOpt = None,
    seed: Annotated[int, typer.Option("--seed", help="Batch order and initialisation seed.")] = 0,
    json_out: JsonOpt = False,
) -> None:
    """Distil a student made of the teacher's layers from the teacher's stored outputs."""
    with friendly_errors(SWITCHES):
        from dataclasses import replace

        from ember.compress import DISTILL_PRESETS, distill, select_layers, trim_vocabulary
        from ember.compress.select import parse_layers

        if preset not in DISTILL_PRESETS:
            raise ValueError(f"--preset {preset!r} is not one of {', '.join(DISTILL_PRESETS)}")
        chosen = {"alpha": alpha, "temperature": temperature, "epochs": epochs, "lr": lr, "cosine_weight": cosine_weight}
        config = replace(DISTILL_PRESETS[preset](), batch_size=batch_size, seed=seed,
                         **{k: v for k, v in chosen.items() if v is not None})
        selection = parse_layers(layers)
        ex = _examples(data, split, text_column, label_column, limit)
        with _teacher(teacher, store, max_length, hidden_layers) as t:
            t.fill(ex, split=split or "train")
            source = t.source(split or "train")

            def student():
                s = select_layers(t.outputs.model, selection)
                return trim_vocabulary(s, t.outputs.tokenizer, keep=sorted(source.token_ids())) if trim_vocab else s

            searched = None
            if search_trials:
                config, searched = _search(t, source, student, config, search_trials, data, val_split, text_column,
                                           label_column, limit)
            model = student()
            report = distill(model, source, config)
            result = _save(model, t.outputs.tokenizer, out, {"distill": config.to_dict(), "layers": selection.to_dict()},
                           optimize, int8_embeddings, ex.texts)
        console.print(f"distilled a {len(selection.resolve(t.outputs.parts.num_layers))}-layer student in "
                      f"{report.seconds:.1f}s (loss {report.epoch_loss[-1]:.4f}); saved to {out}")
        if json_out:
            emit_json({"command": "distill", **result, "report": report.to_dict(), "search": searched})


def _search(t, source, student, config, trials, data, val_split, text_column, label_column, limit):
    from ember.compress import search

    if val_split is None:
        raise ValueError("--search-trials scores each trial on a validation split; pass --val-split NAME")
    val = _examples(data, val_split, text_column, label_column, limit)
    t.fill(val, split=val_split)
    result = search(lambda layers: student(), source, t.source(val_split), trials=trials, base=config)
    console.print(f"search: best alpha={result.best.alpha:.3f} T={result.best.temperature:.2f} lr={result.best.lr:.2e} "
                  f"epochs={result.best.epochs} (validation accuracy {result.best_accuracy:.4f})")
    return result.best, result.to_dict()


def prune_cmd(
    model: Annotated[str, typer.Option("--model", help="Model folder to prune (a classifier).")],
    data: DataOpt,
    out: OutOpt,
    method: Annotated[str, typer.Option("--method", help="structured, magnitude or movement.")] = "structured",
    heads: Annotated[float, typer.Option("--heads", help="Structured: fraction of each layer's heads to remove.")] = 0.5,
    ffn: Annotated[float, typer.Option("--ffn", help="Structured: fraction of feed-forward neurons to remove.")] = 0.5,
    sparsity: Annotated[float, typer.Option("--sparsity", help="Magnitude/movement: final fraction of zero weights.")] = 0.9,
    teacher: Annotated[str | None, typer.Option("--teacher", help="Teacher whose outputs guide pruning and recovery "
                                                "(default: the model before pruning).")] = None,
    split: SplitOpt = None,
    store: StoreOpt = None,
    epochs: EpochsOpt = 2,
    lr: LrOpt = 5e-5,
    alpha: AlphaOpt = 0.5,
    temperature: TempOpt = 2.0,
    batch_size: BatchOpt = 32,
    optimize: OptimizeOpt = None,
    int8_embeddings: Int8EmbOpt = False,
    max_length: MaxLenOpt = None,
    text_column: TextCol = None,
    label_column: LabelCol = None,
    limit: LimitOpt = None,
    json_out: JsonOpt = False,
) -> None:
    """Prune a model (structured: remove heads and neurons; magnitude/movement: sparse weights), distilling to recover."""
    with friendly_errors({**SWITCHES, "heads=": "--heads ", "ffn=": "--ffn "}):
        from ember.compress import (
            DistillConfig,
            MagnitudePruneConfig,
            MovementPruneConfig,
            StructuredPruneConfig,
            load_compressed,
            prune,
        )

        configs = {"structured": lambda: StructuredPruneConfig(heads=heads, ffn=ffn),
                   "magnitude": lambda: MagnitudePruneConfig(sparsity=sparsity),
                   "movement": lambda: MovementPruneConfig(sparsity=sparsity)}
        if method not in configs:
            raise ValueError(f"--method {method!r} is not one of {', '.join(configs)}")
        config = configs[method]()
        train = DistillConfig(alpha=alpha, temperature=temperature, epochs=epochs, lr=lr, batch_size=batch_size)
        ex = _examples(data, split, text_column, label_column, limit)
        target, tok = load_compressed(model)
        with _teacher(teacher or model, store, max_length) as t:
            t.fill(ex, split=split or "train")
            result = prune(target, config, source=t.source(split or "train"), train=train)
            saved = _save(target, tok, out, {"prune": config.to_dict(), "distill": train.to_dict()}, optimize,
                          int8_embeddings, ex.texts)
        console.print(f"{method} pruning: encoder-layer parameters {result.params_before:,} -> {result.params_after:,}, "
                      f"{result.heads} heads and {result.ffn} FFN neurons per layer, sparsity {result.sparsity:.2f}; saved to {out}")
        if json_out:
            emit_json({"command": "prune", **saved, **result.to_dict()})


def qat_cmd(
    model: Annotated[str, typer.Option("--model", help="Model folder to make robust to int8 (a classifier).")],
    data: DataOpt,
    out: OutOpt,
    target: Annotated[str, typer.Option("--target", help="Engine it will run on: onnx, openvino or torchao.")] = "onnx",
    teacher: Annotated[str | None, typer.Option("--teacher", help="Teacher (default: the model itself).")] = None,
    split: SplitOpt = None,
    store: StoreOpt = None,
    epochs: EpochsOpt = 1,
    lr: LrOpt = 2e-5,
    alpha: AlphaOpt = 0.5,
    temperature: TempOpt = 2.0,
    batch_size: BatchOpt = 32,
    optimize: OptimizeOpt = None,
    int8_embeddings: Int8EmbOpt = False,
    max_length: MaxLenOpt = None,
    text_column: TextCol = None,
    label_column: LabelCol = None,
    limit: LimitOpt = None,
    json_out: JsonOpt = False,
) -> None:
    """Quantisation-aware training (torchao) distilled from the teacher's stored outputs."""
    with friendly_errors(SWITCHES):
        from ember.compress import DistillConfig, QATConfig, load_compressed, qat

        config = QATConfig(target=target,  # type: ignore[arg-type]
                           distill=DistillConfig(alpha=alpha, temperature=temperature, epochs=epochs, lr=lr,
                                                 batch_size=batch_size, warmup=0.0))
        if target == "torchao" and optimize:
            raise ValueError("--target torchao makes torchao's own int8 model, which ONNX Runtime and OpenVINO cannot "
                             "export; use --target onnx (or openvino) with --optimize")
        ex = _examples(data, split, text_column, label_column, limit)
        student, tok = load_compressed(model)
        with _teacher(teacher or model, store, max_length) as t:
            t.fill(ex, split=split or "train")
            result = qat(student, t.source(split or "train"), config)
        if target == "torchao":
            saved = {"out": None, "note": "torchao int8 models are not saved by ember; use the Python API"}
        else:
            saved = _save(result.model, tok, out, {"qat": config.to_dict()}, optimize, int8_embeddings, ex.texts)
        console.print(f"quantisation-aware training ({target}): {result.fake_quantized} Linear layers fake-quantised, "
                      f"{result.report.seconds:.1f}s" + (f"; saved to {out}" if saved.get("out") else ""))
        if json_out:
            emit_json({"command": "qat", **saved, "target": target, "fake_quantized": result.fake_quantized,
                       "report": result.report.to_dict()})


def calibrate_cmd(
    model: Annotated[str, typer.Option("--model", help="Classifier folder whose reject-class threshold to choose.")],
    data: DataOpt,
    out: OutOpt,
    reject_label: Annotated[str, typer.Option("--reject-label", help="The reject class: a class name of the model "
                                              "(e.g. oos) or its id.")],
    split: Annotated[str | None, typer.Option("--split", help="Held-out split to choose it on (e.g. val; needs "
                                              "examples of the reject class and of the others).")] = None,
    criterion: Annotated[str, typer.Option("--criterion", help="balanced: mean of in-scope accuracy and reject recall "
                                           "(default); accuracy: plain accuracy on --split.")] = "balanced",
    optimize: Annotated[str | None, typer.Option("--optimize", help="Also build and save the served artifact with this "
                                                 "ember.optimize preset in OUT/optimized; the offset is then chosen on "
                                                 "its logits.")] = None,
    int8_embeddings: Int8EmbOpt = False,
    max_length: MaxLenOpt = None,
    text_column: TextCol = None,
    label_column: LabelCol = None,
    limit: LimitOpt = None,
    json_out: JsonOpt = False,
) -> None:
    """Choose the reject class's threshold on held-out data and bake it into the classifier's output bias."""
    with friendly_errors(SWITCHES):
        from ember.compress import calibrate_reject, load_compressed
        from ember.compress.calibrate import CRITERIA

        if criterion not in CRITERIA:
            raise ValueError(f"--criterion {criterion!r} is not one of {', '.join(CRITERIA)}")
        classifier, tok = load_compressed(model)
        ex = _examples(data, split, text_column, label_column, limit)
        # with --optimize the offset is chosen on the served artifact's logits (int8 moves the reject margin)
        served = _build(classifier, tok, optimize, int8_embeddings, ex.texts) if optimize else None
        choice = calibrate_reject(classifier, tok, ex.texts, ex.labels, reject_label, criterion=criterion,  # type: ignore[arg-type]
                                  max_length=max_length, served=served)
        saved = _save(classifier, tok, out, {"reject_calibration": choice.to_dict()}, optimize, int8_embeddings, ex.texts)
        b, a = choice.before, choice.after
        console.print(f"reject class {choice.reject_label}: logit offset {choice.bias:+.3f} ({criterion}); on "
                      f"{choice.examples} examples, reject recall {b['reject_recall']:.3f} -> {a['reject_recall']:.3f}, "
                      f"in-scope accuracy {b['in_scope_accuracy']:.4f} -> {a['in_scope_accuracy']:.4f}; saved to {out}")
        if json_out:
            emit_json({"command": "calibrate", **saved, "calibration": choice.to_dict()})


def register(app: typer.Typer) -> None:
    """Add ``distill``, ``prune``, ``qat`` and ``calibrate`` to the ``ember`` app."""
    app.command("distill")(distill_cmd)
    app.command("prune")(prune_cmd)
    app.command("qat")(qat_cmd)
    app.command("calibrate")(calibrate_cmd)
