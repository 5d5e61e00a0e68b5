"""``ember recycle fill|train|eval``: the recycling API on the command line."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Annotated

import typer

from ember.cli.common import (
    ALLOW_EMPTY,
    DATA_SWITCHES,
    MAX_LENGTH_SWITCHES,
    MODEL_SWITCHES,
    STORE_WRITE_SWITCHES,
    WRITABLE_LOCATION,
    DataOpt,
    JsonOpt,
    LabelCol,
    LimitOpt,
    MaxLenOpt,
    ModelOpt,
    TextCol,
    console,
    emit_json,
    friendly_errors,
    shown_warnings,
)
from ember.fixes import WRITABLE_COPY

app = typer.Typer(help="Embedding recycling: store frozen lower layers' states once, train and infer from them.", no_args_is_help=True)

SplitOpt = Annotated[str | None, typer.Option("--split", help="Split of CLINC150 JSON / HF dataset (default train).")]
LayerOpt = Annotated[int, typer.Option("--layer", help="Split layer k: embeddings and layers 0..k-1 are frozen and stored.")]
StoreOpt = Annotated[Path, typer.Option("--store", help="Store directory.")]
DtypeOpt = Annotated[str, typer.Option("--dtype", help="Storage dtype: float32, float16 or bfloat16.")]
BackendOpt = Annotated[str, typer.Option("--backend", help="Store backend: lmdb, leveldb or memory.")]
StoredLayerOpt = Annotated[int | None, typer.Option("--layer", help="Split layer (default: the store's).")]
StoredDtypeOpt = Annotated[str | None, typer.Option("--dtype", help="Storage dtype (default: the store's).")]
LayersPath = Annotated[str | None, typer.Option("--layers-path", help="Layer list path for unknown architectures.")]
EmbPath = Annotated[str | None, typer.Option("--embeddings-path", help="Embeddings path for unknown architectures.")]


# The fixes library messages name, in each command's flags (see common.friendly_errors).
FILL_SWITCHES = {
    **STORE_WRITE_SWITCHES,
    **DATA_SWITCHES,
    **MODEL_SWITCHES,
    **MAX_LENGTH_SWITCHES,
    ALLOW_EMPTY: "pass --allow-empty",
    WRITABLE_LOCATION: "Pass a writable --store DIR",
    # a fill that must write a store whose folder cannot be written (ember.store.fill.fill_split)
    WRITABLE_COPY: "but its folder cannot be written; pass a writable --store DIR",
}
EVAL_SWITCHES = {
    **STORE_WRITE_SWITCHES,
    **DATA_SWITCHES,
    **MAX_LENGTH_SWITCHES,
    WRITABLE_LOCATION: "Pass a writable --store DIR, or leave out --write-back to read the store without writing it",
}

TRAINED_FROM = "ember-recycle.json"  # written by `recycle train` beside the model: the store it was trained from


def _trained_store(model: str) -> tuple[Path, str]:
    """The store ``ember recycle train`` recorded in the model folder ``model``, and its backend."""
    record = Path(model) / TRAINED_FROM
    if not record.is_file():
        raise ValueError(f"pass --store: {model} has no {TRAINED_FROM} (ember recycle train writes it) to tell which store it was trained from")
    saved = json.loads(record.read_text())
    return Path(saved["store"]), saved.get("backend", "lmdb")  # recorded since session 6; lmdb before


def _recycler(model, tok, store, layer, dtype, backend, max_length, layers_path, embeddings_path, readonly=False):
    from ember.recycle import RecycleConfig, Recycler

    cfg = RecycleConfig(layer=layer, dtype=dtype, backend=backend, max_length=max_length)  # type: ignore[arg-type]
    return Recycler(model, tok, store, cfg, readonly=readonly, layers_path=layers_path, embeddings_path=embeddings_path)


def _stored_settings(store: Path, backend: str, layer: int | None, dtype: str | None, max_length: int | None,
                     split: str | None = None):
    """Layer, dtype and max length recorded in an existing store (unless given explicitly), its label
    names, and the record of ``split`` when one is asked for: one read-only open for all of it."""
    from ember.errors import StoreError
    from ember.store import ActivationStore

    probe = ActivationStore.open(store, None, backend=backend, readonly=True)  # type: ignore[arg-type]
    try:
        fp, names = probe.fingerprint, probe.label_names
        recorded = None if split is None else probe.find_split(split)
        if split is not None and recorded is None:
            raise StoreError(f"the store at {store} has no split {split!r} (it has {probe.split_names() or 'none'}). "
                             f"Fill it first: ember recycle fill --split {split} ...")
    finally:
        probe.close()
    return (
        fp.layer if layer is None else layer,
        fp.dtype if dtype is None else dtype,
        fp.max_length if max_length is None else max_length,
        names,
        recorded,
    )


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
    allow_empty: Annotated[bool, typer.Option("--allow-empty", help="Store empty texts (the special tokens' "
                                              "states) instead of refusing them.")] = False,
    json_out: JsonOpt = False,
) -> None:
    """Compute and store the layer-k states of every example not stored yet (resumable)."""
    with friendly_errors(FILL_SWITCHES):
        from ember.data import load_examples
        from ember.errors import StoreLockedError
        from ember.models import load_model

        ex = load_examples(data, split=split, text_column=text_column, label_column=label_column, limit=limit)
        m, tok = load_model(model, "embedding")
        # An existing store is read, and written only when something is missing: beside another process that
        # writes it, or in a folder that cannot be written, a fill of what is stored succeeds.
        with _recycler(m, tok, store, layer, dtype, backend, max_length, layers_path, embeddings_path) as rec:
            report = rec.fill(ex, split=split or "train", batch_size=batch_size, num_workers=num_workers,
                              allow_empty=allow_empty)
            result = {"command": "recycle fill", "split": report.split, "store": str(store), "layer": layer,
                      "entries": len(rec.store), **report.to_dict()}
            blocked = None if report.computed else rec.handle.blocked()
        if report.computed:
            console.print(
                f"stored {report.computed} new examples ({report.already_stored} were already stored) "
                f"in {report.seconds:.1f}s; the store holds {result['entries']} entries"
            )
        else:
            note = ""
            if isinstance(blocked, StoreLockedError):
                note = " (another process is writing the store; nothing needed writing)"
            elif blocked is not None:
                note = " (the store's folder is read-only; nothing needed writing)"
            console.print(f"all {report.unique} distinct examples ({report.examples} rows) were already stored; "
                          f"nothing to compute{note}")
        if json_out:
            emit_json(result)


@app.command()
def train(
    store: StoreOpt,
    out: Annotated[Path, typer.Option("--out", help="Folder for the trained model (save_pretrained).")],
    model: ModelOpt = None,
    split: Annotated[str, typer.Option("--split", help="Split recorded by `ember recycle fill --split` to train on.")] = "train",
    layer: StoredLayerOpt = None,
    dtype: StoredDtypeOpt = None,
    epochs: Annotated[int, typer.Option(help="Training epochs.")] = 3,
    batch_size: Annotated[int, typer.Option(help="Training batch size.")] = 32,
    lr: Annotated[float, typer.Option(help="AdamW learning rate.")] = 1e-4,
    seed: Annotated[int, typer.Option(help="Shuffling and head initialisation seed.")] = 0,
    backend: BackendOpt = "lmdb",
    max_length: MaxLenOpt = None,
    layers_path: LayersPath = None,
    embeddings_path: EmbPath = None,
    json_out: JsonOpt = False,
) -> None:
    """Train layers k..N-1 and a classification head from a split's stored states and labels (no texts read)."""
    with friendly_errors({**MODEL_SWITCHES, **MAX_LENGTH_SWITCHES}):
        import torch

        from ember.errors import MissingEntriesError
        from ember.models import load_model
        from ember.models.load import check_output_dir
        from ember.recycle import train_top

        check_output_dir(out)  # before training: a folder that cannot be written used to fail after the last epoch
        layer, dtype, max_length, names, recorded = _stored_settings(store, backend, layer, dtype, max_length, split)
        if recorded.labels is None:
            raise MissingEntriesError(
                f"split {split!r} of {store} was filled without labels; fill it again from labelled data "
                f"(ember recycle fill --split {split} --label-column NAME ...)"
            )
        torch.manual_seed(seed)
        if names is not None:
            m, tok = load_model(model, "classification", label_names=names)
        else:
            m, tok = load_model(model, "classification", num_labels=1 + max(recorded.labels))
        with _recycler(m, tok, store, layer, dtype, backend, max_length, layers_path, embeddings_path, readonly=True) as rec:
            report = train_top(rec, split, epochs=epochs, batch_size=batch_size, lr=lr, seed=seed)
        out.mkdir(parents=True, exist_ok=True)
        m.save_pretrained(out)
        tok.save_pretrained(out)
        (out / TRAINED_FROM).write_text(json.dumps({"layer": layer, "dtype": dtype, "store": str(store.resolve()), "backend": backend}, indent=2))
        console.print(f"trained {epochs} epochs on {report.examples} stored examples of split {split!r}; model saved to {out}")
        if json_out:
            emit_json({"command": "recycle train", "out": str(out), "split": split, **report.to_dict()})


@app.command("eval")
def evaluate_cmd(
    model: Annotated[str, typer.Option("--model", help="Trained model folder (from ember recycle train).")],
    data: DataOpt,
    store: Annotated[Path | None, typer.Option("--store", help="Store directory (default: the one `ember recycle train` "
                                                "recorded in the model folder).")] = None,
    split: SplitOpt = None,
    layer: StoredLayerOpt = None,
    dtype: StoredDtypeOpt = None,
    write_back: Annotated[bool, typer.Option(help="Store the states of examples that were not stored.")] = False,
    batch_size: Annotated[int, typer.Option(help="Inference batch size.")] = 64,
    backend: Annotated[str | None, typer.Option("--backend", help="Store backend: lmdb, leveldb or memory (default: the "
                                                "one `ember recycle train` recorded, else lmdb).")] = None,
    max_length: MaxLenOpt = None,
    text_column: TextCol = None,
    label_column: LabelCol = None,
    limit: LimitOpt = None,
    layers_path: LayersPath = None,
    embeddings_path: EmbPath = None,
    json_out: JsonOpt = False,
) -> None:
    """Accuracy on labelled data, starting from stored states where present (misses computed)."""
    with friendly_errors(EVAL_SWITCHES):
        from ember.data import load_examples
        from ember.models import load_model
        from ember.recycle import evaluate

        if store is None:
            store, recorded_backend = _trained_store(model)
            backend = backend or recorded_backend
        backend = backend or "lmdb"
        layer, dtype, max_length, _, _ = _stored_settings(store, backend, layer, dtype, max_length)
        ex = load_examples(data, split=split, text_column=text_column, label_column=label_column, limit=limit)
        ex.require_labels("eval measures accuracy against them")
        m, tok = load_model(model, "classification")
        with _recycler(m, tok, store, layer, dtype, backend, max_length, layers_path, embeddings_path,
                       readonly=not write_back) as rec:
            start = time.perf_counter()
            with shown_warnings():  # labels that may not match the model's classes
                acc = evaluate(rec, ex.texts, ex.labels, batch_size=batch_size, write_back=write_back)
            secs = time.perf_counter() - start
        console.print(f"accuracy {acc:.4f} on {len(ex)} examples in {secs:.1f}s")
        if json_out:
            emit_json({"command": "recycle eval", "accuracy": acc, "examples": len(ex), "seconds": secs})
