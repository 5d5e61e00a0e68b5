"""``ember cache fill`` mirrors EncoderCache.fill: a second run computes nothing, bad pooling exits cleanly."""

from __future__ import annotations

import json

import pytest
import torch
from typer.testing import CliRunner

from ember.cli import app
from ember.encoders import CacheConfig, EncoderCache

from conftest import make_model


def test_cache_fill_command(tokenizer, texts, tmp_path):
    model_dir = tmp_path / "model"
    make_model("bert-base").save_pretrained(model_dir)
    tokenizer.save_pretrained(model_dir)
    data = tmp_path / "data.csv"
    data.write_text("text,label\n" + "\n".join(f"{t},{'ab'[i % 2]}" for i, t in enumerate(texts)) + "\n")
    args = ["cache", "fill", "--data", str(data), "--model", str(model_dir), "--save-dir", str(tmp_path / "cache")]
    runner = CliRunner()
    first = runner.invoke(app, args)
    assert first.exit_code == 0, first.output
    report = json.loads(first.stdout.strip().splitlines()[-1])
    assert (report["examples"], report["labels"], report["encoders"]["text"]["computed"]) == (8, True, 8)
    second = json.loads(runner.invoke(app, args).stdout.strip().splitlines()[-1])
    assert second["encoders"]["text"]["already_stored"] == 8 and second["encoders"]["text"]["computed"] == 0
    bad = runner.invoke(app, [*args, "--pooling", "max"])
    assert bad.exit_code == 2
    assert "pooling='max' is not a pooling" in bad.output


def test_cache_fill_takes_the_storage_dtype_and_backend_of_the_api(tokenizer, texts, tmp_path):
    """A cache filled from the command line is the one a CacheConfig(dtype=, backend=) run reads (no flags before)."""
    pytest.importorskip("plyvel")
    model_dir = tmp_path / "model"
    model = make_model("bert-base")
    model.save_pretrained(model_dir)
    tokenizer.save_pretrained(model_dir)
    data = tmp_path / "data.txt"
    data.write_text("\n".join(texts) + "\n")
    args = ["cache", "fill", "--data", str(data), "--model", str(model_dir), "--save-dir", str(tmp_path / "cache")]
    runner = CliRunner()
    r = runner.invoke(app, [*args, "--dtype", "float16", "--backend", "leveldb"])
    assert r.exit_code == 0, r.output
    assert json.loads(r.stdout.strip().splitlines()[-1])["encoders"]["text"]["computed"] == 8
    cfg = CacheConfig(save_dir=tmp_path / "cache", dtype="float16", backend="leveldb")
    with EncoderCache(model.requires_grad_(False), tokenizer, cfg) as cache:
        assert cache.fill(texts, progress=False).computed == 0
        assert cache.embed(texts[:1], dtype=None)["text"].dtype == torch.float16
    bad = runner.invoke(app, [*args, "--backend", "memory"])
    assert bad.exit_code == 2
    assert "backend='memory' keeps nothing on disk" in bad.output and "pass --backend lmdb (or leveldb)" in " ".join(bad.output.split())
