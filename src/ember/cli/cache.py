"""``ember cache fill``: fill a frozen-encoder cache (save_dir) from a data file, as EncoderCache.fill does."""

from __future__ import annotations

from pathlib import Path

import typer

from ember.cli.common import (
    ALLOW_EMPTY,
    DATA_SWITCHES,
    MAX_LENGTH_SWITCHES,
    MODEL_SWITCHES,
    STORE_WRITE_SWITCHES,
    WRITABLE_LOCATION,
    DataOpt,
    LabelCol,
    LimitOpt,
    MaxLenOpt,
    ModelOpt,
    TextCol,
    emit_json,
    friendly_errors,
)
from ember.fixes import MEMORY_BACKEND

# Library phrases naming a Python argument, in this command's flags (see common.friendly_errors).
FILL_SWITCHES = {**STORE_WRITE_SWITCHES, **DATA_SWITCHES, **MODEL_SWITCHES, **MAX_LENGTH_SWITCHES, ALLOW_EMPTY: "pass --allow-empty",
                 WRITABLE_LOCATION: "Pass a writable --save-dir DIR", MEMORY_BACKEND: "pass --backend lmdb (or leveldb)"}

app = typer.Typer(help="Frozen-encoder embedding cache: compute pooled embeddings once, train heads from them.", no_args_is_help=True)


@app.command("fill")
def fill_cmd(
    data: DataOpt,
    save_dir: Path = typer.Option(..., "--save-dir", help="cache folder (reused and fingerprint-checked by later runs)"),
    model: ModelOpt = None,
    pooling: str = typer.Option("mean", "--pooling", help="cls, mean or pooler"),
    split: str = typer.Option("train", "--split", help="split to read from the data and to record in the cache"),
    text_column: TextCol = None,
    label_column: LabelCol = None,
    limit: LimitOpt = None,
    batch_size: int = typer.Option(64, "--batch-size"),
    num_workers: int = typer.Option(0, "--num-workers", help="tokenizer worker processes"),
    max_length: MaxLenOpt = None,
    dtype: str = typer.Option("float32", "--dtype", help="storage dtype: float32, float16 or bfloat16 (CacheConfig.dtype)"),
    backend: str = typer.Option("lmdb", "--backend", help="store backend: lmdb or leveldb (CacheConfig.backend)"),
    allow_empty: bool = typer.Option(False, "--allow-empty", help="store empty texts (the special tokens' embedding) "
                                     "instead of refusing them"),
) -> None:
    """Compute and store the embeddings (and labels) of every example not stored yet; prints a JSON report."""
    with friendly_errors(FILL_SWITCHES):
        from ember.data import load_examples
        from ember.encoders import CacheConfig, EncoderCache
        from ember.models import load_model

        config = CacheConfig(
            save_dir=save_dir, pooling=pooling, batch_size=batch_size, num_workers=num_workers, max_length=max_length,  # type: ignore[arg-type]
            dtype=dtype, backend=backend,  # type: ignore[arg-type]
        )
        examples = load_examples(data, split=split, text_column=text_column, label_column=label_column, limit=limit)
        encoder, tokenizer = load_model(model, "embedding")
        encoder.requires_grad_(False)
        with EncoderCache(encoder, tokenizer, config) as cache:
            report = cache.fill(examples, split=split, allow_empty=allow_empty)
        emit_json({"save_dir": str(save_dir), **report.to_dict()})
