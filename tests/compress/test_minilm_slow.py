"""The real all-MiniLM-L6-v2 through the whole recipe (slow: run with -m slow)."""

from __future__ import annotations

from pathlib import Path

import pytest

CLINC = Path(__file__).resolve().parents[3] / "shared" / "data" / "clinc150"


@pytest.mark.slow
def test_minilm_student_is_pruned_quantised_and_served_by_onnx_runtime(tmp_path):
    pytest.importorskip("onnxruntime")
    pytest.importorskip("torchao")
    if not CLINC.exists():
        pytest.skip(f"CLINC150 not found at {CLINC}")
    from ember.compress import (
        DistillConfig,
        LabelSource,
        RecipeConfig,
        StructuredPruneConfig,
        Teacher,
        compress,
        distill,
        load_compressed,
        save_compressed,
    )
    from ember.data import load_examples
    from ember.models import load_model

    train = load_examples(CLINC, split="train").select(None)
    keep = sorted({lab for lab in train.labels})[:10]  # ten intents: seconds, not minutes
    pick = [i for i, y in enumerate(train.labels) if y in keep]
    texts, labels = [train.texts[i] for i in pick], [keep.index(train.labels[i]) for i in pick]
    model, tok = load_model(None, "classification", label_names=keep)
    distill(model, LabelSource.for_model(model, tok, texts, labels), DistillConfig(alpha=1.0, epochs=2, lr=2e-4),
            progress=False)  # a quick teacher
    teacher = Teacher(model, tok, tmp_path / "store")
    teacher.fill(texts, labels, progress=False)
    recipe = RecipeConfig(distill=DistillConfig(epochs=3, lr=2e-4), prune=StructuredPruneConfig(heads=0.5, ffn=0.5),
                          prune_distill=DistillConfig(epochs=2, lr=2e-4))
    result = compress(teacher, recipe, evaluation=(texts[::5], labels[::5]), sample=texts[:64], progress=False)
    final = result.stages[-1].comparison
    assert final.fidelity.label_agreement > 0.9
    assert result.artifact.fusion_stats.get("attention") == 3  # the pruned attention still fuses
    assert result.artifact.size_bytes < 91e6 / 8  # >= 8x smaller than the fp32 teacher
    save_compressed(result.model, tmp_path / "student", tok)
    again, _ = load_compressed(tmp_path / "student")
    assert again.config.num_attention_heads == 6 and again.config.num_hidden_layers == 3
