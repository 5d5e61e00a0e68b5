"""The production recipe in one call: student from the teacher's layers -> distil -> prune -> QAT -> optimize,
every stage compared with the teacher, the result measured through the benchmark harness.
"""

from __future__ import annotations

import copy
import time
from collections.abc import Sequence
from dataclasses import dataclass, field

from torch import nn

from ember.compress.config import DistillConfig, QATConfig, StructuredPruneConfig
from ember.compress.distillation import distill
from ember.compress.evaluate import TeacherComparison, compare_with_teacher
from ember.compress.pruning import prune
from ember.compress.quantization import qat
from ember.compress.select import LayerSelection, every_other, select_layers
from ember.compress.teacher import Teacher
from ember.compress.vocab import quantize_embeddings, trim_vocabulary


@dataclass(frozen=True)
class RecipeConfig:
    """The stages :func:`compress` runs (``None`` skips one).

    Args:
        layers: which teacher layers the student keeps.
        trim_vocabulary: keep only the embedding rows of the tokens the training split uses.
        distill: the first distillation run.
        prune: structured pruning after it, then ``prune_distill`` to recover.
        prune_distill: the distillation run after pruning.
        qat: quantisation-aware training for the int8 engine.
        int8_embeddings: store the embedding tables as int8 rows at the end.
        engine: the ``ember.optimize`` preset the result is served with (an int8 one after QAT).
        reject_label: a "none of these" class (id or name, e.g. ``"oos"``) whose logit offset is chosen on the
            served artifact's ``validation`` logits at the end (:func:`~ember.compress.calibrate_reject`), then the
            artifact built again with it; ``None`` skips the stage.
        reject_criterion: ``"balanced"`` or ``"accuracy"`` (see :mod:`ember.compress.calibrate`).

    Example:
        >>> RecipeConfig(prune=None).engine
        'onnx-int8'
    """

    layers: LayerSelection = field(default_factory=every_other)
    trim_vocabulary: bool = True
    distill: DistillConfig = field(default_factory=DistillConfig)
    prune: StructuredPruneConfig | None = field(default_factory=StructuredPruneConfig)
    prune_distill: DistillConfig | None = field(default_factory=lambda: DistillConfig(epochs=2))
    qat: QATConfig | None = field(default_factory=QATConfig)
    int8_embeddings: bool = True
    engine: str = "onnx-int8"
    reject_label: int | str | None = None
    reject_criterion: str = "balanced"

    def __post_init__(self) -> None:
        from ember.compress.calibrate import CRITERIA
        from ember.optimize import PRESETS

        if self.reject_criterion not in CRITERIA:
            raise ValueError(f"reject_criterion={self.reject_criterion!r} is not one of {', '.join(CRITERIA)}")
        if self.engine not in PRESETS:
            raise ValueError(f"engine={self.engine!r} is not an ember.optimize preset; known: {', '.join(PRESETS)}")


@dataclass
class Stage:
    """One stage of the recipe: its name, wall time and comparison with the teacher (on the evaluation data)."""

    name: str
    seconds: float
    comparison: TeacherComparison | None = None

    def to_dict(self) -> dict:
        return {"name": self.name, "seconds": self.seconds,
                "comparison": None if self.comparison is None else self.comparison.to_dict()}


@dataclass
class RecipeResult:
    """The compressed model (PyTorch), its served artifact, the stages, the benchmark report and the reject
    class's calibration (when the recipe has one)."""

    model: nn.Module = field(repr=False)
    artifact: object = field(repr=False)
    stages: list[Stage] = field(default_factory=list)
    bench: object | None = None
    calibration: object | None = None

    def to_dict(self) -> dict:
        return {"stages": [s.to_dict() for s in self.stages],
                "bench": None if self.bench is None else self.bench.to_dict(),
                "calibration": None if self.calibration is None else self.calibration.to_dict()}


class _Run:
    """Times each stage and compares the current student with the teacher after it."""

    def __init__(self, teacher: Teacher, evaluation: tuple[Sequence[str], Sequence[int]] | None) -> None:
        self.teacher, self.evaluation = teacher, evaluation
        self.stages: list[Stage] = []

    def stage(self, name: str, start: float, model) -> None:
        comparison = None
        if self.evaluation is not None:
            texts, labels = self.evaluation
            comparison = compare_with_teacher(model, self.teacher.outputs.model, self.teacher.outputs.tokenizer, texts, labels)
        self.stages.append(Stage(name, time.perf_counter() - start, comparison))


def compress(teacher: Teacher, recipe: RecipeConfig | None = None, *, split: str = "train",
             evaluation: tuple[Sequence[str], Sequence[int]] | None = None, sample: Sequence[str] | None = None,
             bench=None, progress: bool = True,
             validation: tuple[Sequence[str], Sequence[int | str]] | None = None) -> RecipeResult:
    """Run the recipe on ``teacher`` from its stored outputs of ``split``.

    Args:
        teacher: a :class:`Teacher` whose store holds ``split`` (``teacher.fill(train)``).
        recipe: the stages.
        evaluation: ``(texts, label_ids)`` every stage is compared with the teacher on (``None``: no comparison).
        sample: texts ``ember.optimize`` verifies (and calibrates) the artifact on.
        bench: a :class:`~ember.bench.BenchConfig` to measure teacher and result side by side (``evaluation``
            texts and labels), or ``None``.
        validation: ``(texts, labels)`` held out from training and evaluation, on which ``recipe.reject_label``'s
            offset is chosen (needed when it is set).

    Returns:
        a :class:`RecipeResult`.

    Example:
        >>> result = compress(teacher, RecipeConfig(), evaluation=(test.texts, test_ids), sample=val.texts[:64])  # doctest: +SKIP
    """
    from ember.optimize import optimize, preset

    recipe = recipe or RecipeConfig()
    if recipe.reject_label is not None and validation is None:
        raise ValueError(f"reject_label={recipe.reject_label!r} needs validation=(texts, labels): held-out examples, "
                         "with some of that class, to choose its threshold on")
    source, run, tok = teacher.source(split), _Run(teacher, evaluation), teacher.outputs.tokenizer
    start = time.perf_counter()
    student = select_layers(teacher.outputs.model, recipe.layers)
    if recipe.trim_vocabulary:
        trim_vocabulary(student, tok, keep=sorted(source.token_ids()))
    distill(student, source, recipe.distill, progress=progress)
    run.stage("distill", start, student)
    if recipe.prune is not None:
        start = time.perf_counter()
        prune(student, recipe.prune, source=source, train=recipe.prune_distill, progress=progress)
        run.stage("prune", start, student)
    if recipe.qat is not None:
        start = time.perf_counter()
        student = qat(student, source, recipe.qat, inplace=True, progress=progress).model
        run.stage("qat", start, student)
    start = time.perf_counter()
    if recipe.int8_embeddings:
        quantize_embeddings(student)
    def build():
        return optimize(student, preset(recipe.engine), tokenizer=tok, sample=list(sample) if sample else None)

    artifact = build()
    run.stage(f"optimize ({recipe.engine})", start, artifact)
    calibration = None
    if recipe.reject_label is not None and validation is not None:  # checked above; narrows the type
        from ember.compress.calibrate import calibrate_reject

        start = time.perf_counter()
        texts, labels = validation
        calibration = calibrate_reject(student, tok, texts, labels, recipe.reject_label, criterion=recipe.reject_criterion,  # type: ignore[arg-type]
                                       served=artifact)
        artifact = build()  # again, with the offset in the output bias
        run.stage("calibrate reject threshold", start, artifact)
    report = None if bench is None or evaluation is None else _bench(teacher, artifact, evaluation, bench, progress)
    return RecipeResult(student, artifact, run.stages, report, calibration)


def _bench(teacher: Teacher, artifact, evaluation, config, progress: bool):
    from ember.bench import PerformanceBenchmark, Variant

    model = copy.deepcopy(teacher.outputs.model).eval()
    texts, labels = evaluation
    bench = PerformanceBenchmark(teacher.outputs.tokenizer, texts, list(labels), config, progress=progress)
    return bench.run([Variant("teacher fp32 (PyTorch)", model, reference=True), Variant("compressed", artifact)])
