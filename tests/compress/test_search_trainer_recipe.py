"""Optuna search over stored outputs, the Hugging Face Trainer route, and the recipe chaining every stage."""

from __future__ import annotations

import builtins
import dataclasses

import pytest
import torch
from tiny import filled_teacher, labelled, one_thread  # noqa: F401  (autouse fixture)

from ember.compress import (
    DistillationTrainer,
    DistillConfig,
    RecipeConfig,
    SearchSpace,
    StructuredPruneConfig,
    compress,
    every_other,
    search,
    select_layers,
)
from ember.compress.errors import CompressConfigError
from ember.errors import BackendNotInstalledError


def test_search_reads_the_store_and_returns_the_best_settings(tokenizer):
    pytest.importorskip("optuna")
    teacher = filled_teacher(tokenizer)
    student = select_layers(teacher.outputs.model, every_other())
    calls = []
    teacher.outputs.model.forward = lambda *a, **k: calls.append(1)  # every trial must read stored outputs
    result = search(student, teacher.source(), teacher.source(), trials=2, space=SearchSpace(epochs=(1, 1)),
                    base=DistillConfig(batch_size=8), progress=False)
    del teacher.outputs.model.forward
    assert not calls and len(result.trials) == 2
    assert 0.0 <= result.best.alpha <= 1.0 and result.best.epochs == 1 and 0 <= result.best_accuracy <= 1
    assert result.best_accuracy == max(t["accuracy"] for t in result.trials)


def test_search_can_trade_depth_for_latency(tokenizer):
    pytest.importorskip("optuna")
    teacher = filled_teacher(tokenizer)
    result = search(lambda layers: select_layers(teacher.outputs.model, layers), teacher.source(), teacher.source(),
                    trials=2, space=SearchSpace(epochs=(1, 1), layers=((0,), (0, 2))), latency=True,
                    base=DistillConfig(batch_size=8), progress=False)
    assert all("latency_ms" in t and "layers" in t for t in result.trials)
    assert result.best_layers in ((0,), (0, 2))


def test_choosing_layers_needs_a_student_builder(tokenizer):
    pytest.importorskip("optuna")
    teacher = filled_teacher(tokenizer)
    with pytest.raises(CompressConfigError, match="pass student= a function building a student"):
        search(teacher.outputs.model, teacher.source(), teacher.source(), space=SearchSpace(layers=((0,),)))


def test_without_optuna_search_names_the_install(tokenizer, monkeypatch):
    real = builtins.__import__

    def no_optuna(name, *args, **kwargs):
        if name == "optuna" or name.startswith("optuna."):
            raise ImportError("No module named 'optuna'")
        return real(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_optuna)
    teacher = filled_teacher(tokenizer)
    with pytest.raises(BackendNotInstalledError, match=r"uses Optuna, which is not installed: pip install 'ember\[compress\]'"):
        search(teacher.outputs.model, teacher.source(), teacher.source())


def test_the_trainer_distils_with_the_current_compute_loss_signature(tokenizer, tmp_path):
    from transformers import TrainingArguments

    teacher = filled_teacher(tokenizer)
    student = select_layers(teacher.outputs.model, every_other())
    before = [p.detach().clone() for p in student.parameters()]
    args = TrainingArguments(str(tmp_path), max_steps=2, per_device_train_batch_size=8, per_device_eval_batch_size=8,
                             report_to=[], use_cpu=True, save_strategy="no", logging_strategy="no", disable_tqdm=True)
    trainer = DistillationTrainer(model=student, args=args, source=teacher.source(), eval_source=teacher.source(),
                                  config=DistillConfig(alpha=0.5, temperature=2.0, cosine_weight=1.0))
    trainer.train()
    assert any(not torch.equal(a, b) for a, b in zip(before, student.parameters(), strict=True))
    assert "eval_loss" in trainer.evaluate()
    batch = trainer.data_collator([{"index": 0, "split": "train"}, {"index": 1, "split": "train"}])
    loss = trainer.compute_loss(student, dict(batch), return_outputs=False, num_items_in_batch=2)
    assert loss.dim() == 0


def test_the_recipe_runs_every_stage_and_compares_each_with_the_teacher(tokenizer):
    pytest.importorskip("onnxruntime")
    pytest.importorskip("torchao")
    teacher = filled_teacher(tokenizer)
    texts, labels = labelled(1)
    one = DistillConfig(epochs=1, batch_size=8)
    recipe = RecipeConfig(distill=one, prune=StructuredPruneConfig(heads=0.5, ffn=0.5, batches=1), prune_distill=one)
    result = compress(teacher, recipe, evaluation=(texts, labels), sample=texts, progress=False)
    assert [s.name for s in result.stages] == ["distill", "prune", "qat", "optimize (onnx-int8)"]
    assert all(s.comparison is not None and s.comparison.fidelity.label_agreement is not None for s in result.stages)
    assert result.artifact.fidelity.mean_cosine > 0.99
    assert result.model.config.num_attention_heads == 2 and result.model.config.ember_int8_embeddings


def test_the_recipe_calibrates_the_reject_class_on_the_served_artifact(tokenizer):
    pytest.importorskip("onnxruntime")
    from ember.compress.calibrate import output_layer

    teacher = filled_teacher(tokenizer)
    texts, labels = labelled(1)
    one = DistillConfig(epochs=1, batch_size=8)
    recipe = RecipeConfig(distill=one, prune=None, qat=None, engine="onnx", reject_label="c")
    with pytest.raises(ValueError, match="needs validation="):
        compress(teacher, recipe, sample=texts, progress=False)
    plain = compress(teacher, dataclasses.replace(recipe, reject_label=None), sample=texts, progress=False)
    result = compress(teacher, recipe, sample=texts, progress=False, validation=(texts, ["abc"[y] for y in labels]))
    assert [s.name for s in result.stages][-1] == "calibrate reject threshold"
    shift = output_layer(result.model).bias - output_layer(plain.model).bias
    # only the reject class moved, by the offset chosen (the two runs train the same student: same seeds)
    assert shift[:2].abs().max() < 1e-5 and float(shift[2]) == pytest.approx(result.calibration.bias, abs=1e-5)
    assert result.to_dict()["calibration"]["reject_label"] == 2
    with pytest.raises(ValueError, match="reject_criterion='f1' is not one of balanced, accuracy"):
        RecipeConfig(reject_criterion="f1")
