"""Distillation with the Hugging Face ``Trainer``, on the teacher's stored outputs.

``DistillationTrainer`` overrides ``compute_loss`` with the current signature ``(model, inputs,
return_outputs=False, num_items_in_batch=None)`` (the override in "NLP with Transformers" took three arguments
and breaks on transformers >= 4.46). ``compute_loss_func`` is not the route here: it receives only the model's
outputs and the labels, while distillation also needs the teacher's logits, which come with each batch.

The dataset yields example indices and the collator reads the whole batch from the store in one transaction
(ids, labels, teacher logits and hidden states), so ``remove_unused_columns`` is switched off: the Trainer would
otherwise drop the index before the collator sees it.

Example:
    >>> trainer = DistillationTrainer(model=student, args=TrainingArguments("out", num_train_epochs=3),
    ...                               source=teacher.source("train"), config=DistillConfig(alpha=0.5))  # doctest: +SKIP
    >>> trainer.train()  # doctest: +SKIP
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from transformers import Trainer

from ember.compress.config import DistillConfig
from ember.compress.distillation import check_student
from ember.compress.errors import StudentMismatchError
from ember.compress.losses import distillation_loss, hidden_cosine_loss
from ember.compress.sources import TeacherSource

HIDDEN = "teacher_hidden_"


class IndexDataset(torch.utils.data.Dataset):
    """``{"index": i, "split": name}`` for each example of a teacher source; :class:`TeacherCollator` reads the batch."""

    def __init__(self, source: TeacherSource, name: str = "train") -> None:
        self.source, self.name = source, name

    def __len__(self) -> int:
        return len(self.source)

    def __getitem__(self, i: int) -> dict:
        return {"index": i, "split": self.name}


class TeacherCollator:
    """Reads a batch of examples from the teacher source its items name: ``input_ids``, ``attention_mask``,
    ``labels``, ``teacher_logits`` and ``teacher_hidden_<i>`` tensors."""

    def __init__(self, sources: dict[str, TeacherSource]) -> None:
        self.sources = sources

    def __call__(self, features: Sequence[dict]) -> dict[str, torch.Tensor]:
        b = self.sources[features[0]["split"]].batch([int(f["index"]) for f in features])
        out = {"input_ids": b.input_ids, "attention_mask": b.attention_mask, "teacher_logits": b.logits}
        if b.labels is not None:
            out["labels"] = b.labels
        out.update({f"{HIDDEN}{k}": v for k, v in b.hidden.items()})
        return out


class DistillationTrainer(Trainer):
    """A ``Trainer`` whose loss is :func:`~ember.compress.losses.distillation_loss` against stored teacher outputs.

    Args:
        source: the stored training split (``teacher.source("train")``); the train dataset and the collator are
            built from it unless given.
        config: the loss's settings (alpha, temperature, cosine and MSE weights); the training settings come from
            ``args`` (``TrainingArguments``).
        eval_source: a stored split to evaluate on.
        **kwargs: the rest of ``Trainer``'s arguments (``model``, ``args`` …).
    """

    loss_is_scaled_for_ga = False  # a per-batch mean: the Trainer divides it over accumulation steps itself

    def __init__(self, *, source: TeacherSource, config: DistillConfig | None = None,
                 eval_source: TeacherSource | None = None, **kwargs) -> None:
        self.distill_config = config or DistillConfig()
        sources = {"train": source} | ({} if eval_source is None else {"eval": eval_source})
        kwargs.setdefault("train_dataset", IndexDataset(source, "train"))
        kwargs.setdefault("data_collator", TeacherCollator(sources))
        if eval_source is not None:
            kwargs.setdefault("eval_dataset", IndexDataset(eval_source, "eval"))
        super().__init__(**kwargs)
        self.args.remove_unused_columns = False  # the collator needs the index the Trainer would drop
        self.pairs = check_student(self.model, source, self.distill_config)
        if self.pairs and self.distill_config.project_hidden:
            raise StudentMismatchError("project_hidden trains a projection the Trainer does not know about; use "
                                       "ember.compress.distill (the plain loop) for students of another width")

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        teacher_logits = inputs.pop("teacher_logits")
        hidden = {int(k[len(HIDDEN):]): inputs.pop(k) for k in list(inputs) if k.startswith(HIDDEN)}
        labels = inputs.pop("labels", None)
        outputs = model(**inputs, output_hidden_states=bool(self.pairs))
        c = self.distill_config
        loss = distillation_loss(outputs.logits, teacher_logits, labels, alpha=c.alpha, temperature=c.temperature,
                                 mse_weight=c.mse_weight)
        for s, t in self.pairs:
            loss = loss + c.cosine_weight / len(self.pairs) * hidden_cosine_loss(
                outputs.hidden_states[s], hidden[t], inputs["attention_mask"])
        return (loss, outputs) if return_outputs else loss
