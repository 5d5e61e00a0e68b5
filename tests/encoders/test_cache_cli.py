"""``ember cache fill`` mirrors EncoderCache.fill: a second run computes nothing, bad pooling exits cleanly."""

from __future__ import annotations

import json

from typer.testing import CliRunner

from ember.cli import app

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
