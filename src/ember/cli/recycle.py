"""``ember recycle fill|train|eval``: the recycling API on the command line."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Annotated

import typer

from ember.cli.common import console, emit_json, friendly_errors

app = typer.Typer(help="Embedding recycling: store frozen lower layers' states once, train and infer from them.", no_args_is_help=True)

ModelOpt = Annotated[str | None, typer.Option("--model", help="Local folder or hub id (default: packaged all-MiniLM-L6-v2).")]
DataOpt = Annotated[str, typer.Option("--data", help="CSV/TSV, JSONL, CLINC150 JSON, saved HF dataset folder or hub name.")]
SplitOpt = Annotated[str | None, typer.Option("--split", help="Split of CLINC150 JSON / HF dataset (default train).")]
LayerOpt = Annotated[int, typer.Option("--layer", help="Split layer k: embeddings and layers 0..k-1 are frozen and stored.")]
StoreOpt = Annotated[Path, typer.Option("--store", help="Store directory.")]
DtypeOpt = Annotated[str, typer.Option("--dtype", help="Storage dtype: float32, float16 or bfloat16.")]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print a final machine-readable JSON line.")]
TextCol = Annotated[str | None, typer.Option("--text-column", help="Text column name.")]
LabelCol = Annotated[str | None, typer.Option("--label-column", help="Label column name.")]
LimitOpt = Annotated[int | None, typer.Option("--limit", help="Use only the first N examples.")]
BackendOpt = Annotated[str, typer.Option("--backend", help="Store backend: lmdb, leveldb or memory.")]
MaxLenOpt = Annotated[int | None, typer.Option("--max-length", help="Truncation length in tokens.")]
LayersPath = Annotated[str | None, typer.Option("--layers-path", help="Layer list path for unknown architectures.")]
EmbPath = Annotated[str | None, typer.Option("--embeddings-path", help="Embeddings path for unknown architectures.")]


def _recycler(model, tok, store, layer, dtype, backend, max_length, layers_path, embeddings_path, readonly=False):
    from ember.recycle import RecycleConfig, Recycler

    cfg = RecycleConfig(layer=layer, dtype=dtype, backend=backend, max_length=max_length)  # type: ignore[arg-type]
    return Recycler(model, tok, store, cfg, readonly=readonly, layers_path=layers_path, embeddings_path=embeddings_path)


@app.command()
def fill(
    data: DataOpt,
    store: StoreOpt,
    layer: LayerOpt = 3,
    model: ModelOpt = None,
    split: SplitOpt = None,
    dtype: DtypeOpt = "float32",
    batch_size: Annotated[int, typer.Option(help="Examples per forward pass and per commit.")] = 64,
    num_workers: Annotated[int, typer.Option(help="Tokenizer worker processes.")] = 0,
    backend: BackendOpt = "lmdb",
    max_length: MaxLenOpt = None,
    text_column: TextCol = None,
    label_column: LabelCol = None,
    limit: LimitOpt = None,
    layers_path: LayersPath = None,
    embeddings_path: EmbPath = None,
    json_out: JsonOpt = False,
) -> None:
    """Compute and store the layer-k states of every example not stored yet (resumable)."""
    with friendly_errors():
        from ember.data import load_examples
        from ember.models import load_model

        ex = load_examples(data, split=split, text_column=text_column, label_column=label_column, limit=limit)
        m, tok = load_model(model, "embedding")
        rec = _recycler(m, tok, store, layer, dtype, backend, max_length, layers_path, embeddings_path)
        report = rec.fill(ex, batch_size=batch_size, num_workers=num_workers)
        result = {"command": "recycle fill", "store": str(store), "layer": layer, "entries": len(rec.store), **report.to_dict()}
        rec.close()
        console.print(
            f"stored {report.computed} new examples ({report.already_stored} were already stored) "
            f"in {report.seconds:.1f}s; the store holds {result['entries']} entries"
        )
        if json_out:
            emit_json(result)


@app.command()
def train(
    store: StoreOpt,
    out: Annotated[Path, typer.Option("--out", help="Folder for the trained model (save_pretrained).")],
    layer: LayerOpt = 3,
    model: ModelOpt = None,
    data: Annotated[str | None, typer.Option("--data", help="Train only on these examples (all must be stored); default: every stored entry.")] = None,
    split: SplitOpt = None,
    dtype: DtypeOpt = "float32",
    epochs: Annotated[int, typer.Option(help="Training epochs.")] = 3,
    batch_size: Annotated[int, typer.Option(help="Training batch size.")] = 32,
    lr: Annotated[float, typer.Option(help="AdamW learning rate.")] = 1e-4,
    seed: Annotated[int, typer.Option(help="Shuffling and head initialisation seed.")] = 0,
    backend: BackendOpt = "lmdb",
    max_length: MaxLenOpt = None,
    text_column: TextCol = None,
    label_column: LabelCol = None,
    limit: LimitOpt = None,
    json_out: JsonOpt = False,
) -> None:
    """Train layers k..N-1 and a classification head from stored states and labels."""
    with friendly_errors():
        import torch

        from ember.data import load_examples
        from ember.errors import MissingEntriesError, StoreError
        from ember.models import load_model
        from ember.recycle import train_top
        from ember.store import ActivationStore
        from ember.store.fill import tokenize

        probe = ActivationStore.open(store, None, backend=backend, readonly=True)  # type: ignore[arg-type]
        names = probe.label_names
        keys = list(probe.kv.keys())
        unlabelled = [k for k, e in zip(keys, probe.get(keys), strict=True) if "label" not in e]
        n_labels = 1 + max((int(e["label"]) for e in probe.get(keys) if "label" in e), default=0)
        probe.close()
        if not keys:
            raise StoreError(f"the store at {store} is empty; fill it first: ember recycle fill --data ... --store {store}")
        if unlabelled:
            raise StoreError(
                f"{len(unlabelled)} entries of {store} have no label; fill the store from labelled data "
                "(--label-column) to train from it"
            )
        torch.manual_seed(seed)
        if names is not None:
            m, tok = load_model(model, "classification", label_names=names)
        else:
            m, tok = load_model(model, "classification", num_labels=n_labels)
        rec = _recycler(m, tok, store, layer, dtype, backend, max_length, None, None, readonly=True)
        if data is not None:
            ex = load_examples(data, split=split, text_column=text_column, label_column=label_column, limit=limit)
            from ember.store.keys import content_key

            wanted = [content_key(x) for x in tokenize(tok, ex.texts, rec.max_length)]
            missing = rec.store.missing(wanted)
            if missing:
                raise MissingEntriesError(
                    f"{len(missing)} of {len(set(wanted))} examples of {data} are not in the store at {store} "
                    f"(first key {missing[0].hex()[:12]}). Fill them first: ember recycle fill --data {data} "
                    f"--store {store} --layer {layer}"
                )
            keys = wanted
        report = train_top(rec, keys, epochs=epochs, batch_size=batch_size, lr=lr, seed=seed)
        out.mkdir(parents=True, exist_ok=True)
        m.save_pretrained(out)
        tok.save_pretrained(out)
        (out / "ember-recycle.json").write_text(json.dumps({"layer": layer, "dtype": dtype, "store": str(store)}, indent=2))
        console.print(f"trained {epochs} epochs on {len(keys)} stored examples; model saved to {out}")
        if json_out:
            emit_json({"command": "recycle train", "out": str(out), **report.to_dict()})


@app.command("eval")
def evaluate_cmd(
    model: Annotated[str, typer.Option("--model", help="Trained model folder (from ember recycle train).")],
    data: DataOpt,
    store: StoreOpt,
    layer: LayerOpt = 3,
    split: SplitOpt = None,
    dtype: DtypeOpt = "float32",
    write_back: Annotated[bool, typer.Option(help="Store the states of examples that were not stored.")] = False,
    batch_size: Annotated[int, typer.Option(help="Inference batch size.")] = 64,
    backend: BackendOpt = "lmdb",
    max_length: MaxLenOpt = None,
    text_column: TextCol = None,
    label_column: LabelCol = None,
    limit: LimitOpt = None,
    json_out: JsonOpt = False,
) -> None:
    """Accuracy on labelled data, starting from stored states where present (misses computed)."""
    with friendly_errors():
        from ember.data import load_examples
        from ember.models import load_model
        from ember.recycle import evaluate

        ex = load_examples(data, split=split, text_column=text_column, label_column=label_column, limit=limit)
        m, tok = load_model(model, "classification")
        names = [m.config.id2label[i] for i in range(m.config.num_labels)]
        labels = ex.label_ids(names if ex.label_names() is not None else None)
        if labels is None:
            raise ValueError(f"{data} has no labels; eval needs a label column (--label-column)")
        rec = _recycler(m, tok, store, layer, dtype, backend, max_length, None, None, readonly=not write_back)
        start = time.perf_counter()
        acc = evaluate(rec, ex.texts, labels, batch_size=batch_size, write_back=write_back)
        secs = time.perf_counter() - start
        console.print(f"accuracy {acc:.4f} on {len(ex)} examples in {secs:.1f}s")
        if json_out:
            emit_json({"command": "recycle eval", "accuracy": acc, "examples": len(ex), "seconds": secs})
