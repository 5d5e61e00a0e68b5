"""Compression: distil -> prune -> QAT -> int8 engine, against the fine-tuned fp32 teacher, side by side.

Data: CLINC150 by default (``--data``, any ember format), trained on ``train`` (+ ``oos_train``), validated on
``val`` (+ ``oos_val``), evaluated on ``test`` (+ ``oos_test``): out-of-scope examples are included (151 classes,
the book's setup) unless ``--no-oos``. Teacher: MiniLM-L6 (the packaged all-MiniLM-L6-v2, or ``--model``) with a
new head, fine-tuned on the train split here and cached.

Variants (rows), measured in one process by ember's benchmark harness (accuracy on the test split, batch-1
p50 latency, batch-32 throughput, size, build/training time):
    teacher fp32 PyTorch | teacher on ONNX Runtime int8 / OpenVINO int8 | 3-layer student fine-tuned plainly |
    3-layer student distilled (Optuna-chosen alpha, T, lr) | distilled + ONNX Runtime int8 / OpenVINO int8 |
    structured-pruned (heads, FFN) + distilled (PyTorch, ONNX Runtime int8) | QAT int8 of the pruned student |
    the same + int8 embeddings | the teacher's full depth structured-pruned (heads, FFN) while distilled, then QAT
    int8 on ONNX Runtime / OpenVINO | 90% magnitude-sparse distilled student on ONNX Runtime int8.
Students keep the teacher's layers 0, 2, 4 (the full-depth pruned ones every layer) and only the embedding rows of
the tokens the train split uses.

Out-of-scope threshold (``--calibrate``, default ``balanced``): when the data has the reject class ``--oos-label``,
each model a row is built from (the teacher too) gets its out-of-scope logit offset chosen on the validation split
by :func:`ember.compress.calibrate_reject` and baked into its output bias before it is measured or exported; each
engine row then has the offset chosen again on its own validation logits (int8 engines move the margin) and is built
again with it, so every row serves the threshold its own outputs need. ``balanced`` maximises the mean of in-scope accuracy and out-of-scope recall
on validation, ``accuracy`` plain validation accuracy, ``none`` leaves the models as trained. Nothing of the test
split is used to choose it.

Everything trained is cached in ``--cache-dir`` (with its training time): run once under ``nice`` to train, then
again when the machine is quiet to measure (``--train-only`` skips the measurement). The epoch-time ratio of
distilling from the store against running the teacher every step is measured on identical batches,
interleaved. The final stdout line is JSON with ``"summary": {"best": {...}}``.

    python benchmarks/compression.py [--quick] [--data DIR] [--model DIR] [--cache-dir DIR] [--out DIR]
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import json
import os
import platform
import random
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_DATA = ROOT.parent / "shared" / "data" / "clinc150"
TEACHER_LR = 2e-4  # full fine-tuning of MiniLM-L6 (linear warm-up over 6% of the steps, then decay)


@dataclass(frozen=True)
class Plan:
    """How much to train and measure (full run or --quick)."""

    train_limit: int | None
    val_limit: int | None
    test_limit: int | None
    teacher_epochs: int
    student_epochs: int
    prune_epochs: int
    qat_epochs: int
    sparse_epochs: int
    search_trials: int
    search_examples: int
    ratio_batches: int
    latency_samples: int
    throughput_examples: int
    repeats: int


FULL = Plan(None, None, None, teacher_epochs=4, student_epochs=5, prune_epochs=3, qat_epochs=1, sparse_epochs=2,
            search_trials=8, search_examples=4000, ratio_batches=120, latency_samples=300, throughput_examples=2000,
            repeats=3)
QUICK = Plan(1500, 300, 500, teacher_epochs=1, student_epochs=1, prune_epochs=1, qat_epochs=1, sparse_epochs=1,
             search_trials=2, search_examples=500, ratio_batches=10, latency_samples=40, throughput_examples=256, repeats=1)


def log(msg: str) -> None:
    print(json.dumps({"progress": msg, "t": round(time.time(), 1)}), file=sys.stderr, flush=True)


def load_average() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


def cpu_model() -> str:
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, check=True).stdout
        return next(line.split(":", 1)[1].strip() for line in out.splitlines() if line.startswith("Model name"))
    except Exception:
        return platform.processor()


# ---- data ---------------------------------------------------------------------------------------------
def _split(args, name: str, limit: int | None, oos: bool):
    from ember.data import Examples, load_examples

    ex = load_examples(args.data, split=name, text_column=args.text_column, label_column=args.label_column)
    if oos:
        extra = load_examples(args.data, split=f"oos_{name}")
        ex = Examples(ex.texts + extra.texts, list(ex.labels) + list(extra.labels), ex.source)
    if limit is not None:  # a spread, not the first N (CLINC files are grouped by intent)
        idx = sorted(random.Random(0).sample(range(len(ex)), min(limit, len(ex))))
        ex = Examples([ex.texts[i] for i in idx], [ex.labels[i] for i in idx], ex.source)
    return ex


def load_data(args, plan: Plan):
    """train, val, test Examples; whether out-of-scope examples are in; the label names."""
    data_file = Path(args.data) / "data_full.json" if Path(args.data).is_dir() else Path(args.data)
    oos = args.oos and data_file.suffix == ".json" and "oos_train" in json.loads(data_file.read_text())
    train = _split(args, args.train_split, plan.train_limit, oos)
    test = _split(args, args.test_split, plan.test_limit, oos)
    try:
        val = _split(args, args.val_split, plan.val_limit, oos)
    except Exception:  # no validation split: hold out 10% of train
        from ember.data import Examples

        idx = list(range(len(train)))
        random.Random(1).shuffle(idx)
        cut = max(1, len(idx) // 10)
        pick = lambda ids: Examples([train.texts[i] for i in ids], [train.labels[i] for i in ids], train.source)  # noqa: E731
        val, train = pick(sorted(idx[:cut])), pick(sorted(idx[cut:]))
    names = train.label_names()
    return train, val, test, oos, names


# ---- cache --------------------------------------------------------------------------------------------
class Cache:
    """Trained models and their training seconds, under one folder per (data, model, plan) run."""

    def __init__(self, root: Path, retrain: bool) -> None:
        self.root, self.retrain = root, retrain
        root.mkdir(parents=True, exist_ok=True)
        self.record_path = root / "record.json"
        self.record = {} if retrain or not self.record_path.exists() else json.loads(self.record_path.read_text())

    def has(self, name: str) -> bool:
        return not self.retrain and name in self.record and (self.root / name).exists()

    def save(self, name: str, model, tokenizer, seconds: float, info: dict | None = None) -> None:
        from ember.compress import save_compressed

        save_compressed(model, self.root / name, tokenizer, info=info)
        self.record[name] = {"seconds": seconds, **(info or {})}
        self.record_path.write_text(json.dumps(self.record, indent=2, default=str))

    def load(self, name: str):
        from ember.compress import load_compressed

        return load_compressed(self.root / name)[0]

    def seconds(self, name: str) -> float:
        return float(self.record[name]["seconds"])


# ---- training ------------------------------------------------------------------------------------------
def fine_tune_teacher(args, plan: Plan, cache: Cache, train, names):
    from ember.compress import DistillConfig, LabelSource, distill
    from ember.models import load_model

    model, tok = load_model(args.model, "classification", label_names=names)
    if cache.has("teacher"):
        return cache.load("teacher"), tok
    log(f"fine-tuning the teacher ({plan.teacher_epochs} epochs on {len(train)} examples)")
    torch.manual_seed(0)
    source = LabelSource.for_model(model, tok, train.texts, train.label_ids(names), max_length=args.max_length)
    t0 = time.perf_counter()
    distill(model, source, DistillConfig(alpha=1.0, epochs=plan.teacher_epochs, lr=TEACHER_LR, batch_size=32), progress=False)
    cache.save("teacher", model, tok, time.perf_counter() - t0, {"epochs": plan.teacher_epochs, "lr": TEACHER_LR})
    return model.eval(), tok


def fill_teacher(args, cache: Cache, teacher_model, tok, train, val, names):
    """The teacher's outputs for train and val, in the store (computed once; later runs find them)."""
    from ember.compress import Teacher, TeacherConfig

    teacher = Teacher(teacher_model, tok, cache.root / "teacher-store", TeacherConfig(max_length=args.max_length))
    fills = {}
    for split, ex in (("train", train), ("val", val)):
        report = teacher.fill(ex.texts, ex.label_ids(names), split=split, progress=False)
        fills[split] = {"computed": report.computed, "already_stored": report.already_stored,
                        "seconds": round(report.seconds, 2)}
    log(f"teacher store: {fills}")
    return teacher, fills


def new_student(teacher_model, tok, source, selection=None):
    """Layers ``selection`` (default 0, 2, 4) of the teacher, embedding rows of the train split's tokens only."""
    from ember.compress import every_other, select_layers, trim_vocabulary

    student = select_layers(teacher_model, selection or every_other())
    return trim_vocabulary(student, tok, keep=sorted(source.token_ids()))


def train_student(name: str, cache: Cache, tok, build, run) -> tuple[object, float]:
    """A cached student, or ``build()`` one, ``run(student)`` its training, and cache it with its seconds."""
    if cache.has(name):
        return cache.load(name), cache.seconds(name)
    log(f"training {name}")
    student = build()
    t0 = time.perf_counter()
    info = run(student) or {}
    seconds = time.perf_counter() - t0
    cache.save(name, student, tok, seconds, info)
    return student, seconds


def choose_settings(plan: Plan, cache: Cache, teacher, tok, names) -> dict:
    """alpha, T, lr (and epochs on the subset) chosen by Optuna from the stored outputs (cached)."""
    from ember.compress import SearchSpace, search

    if not cache.retrain and "search" in cache.record:
        return cache.record["search"]
    train = teacher.source("train")
    subset = sorted(random.Random(2).sample(range(len(train)), min(plan.search_examples, len(train))))
    record = teacher.store.get_split("train")
    from ember.store.activations import Split

    # the subset's keys point at entries already stored: recording it computes nothing
    with teacher.handle.writing("recording the search subset") as store:
        store.add_split("search", Split({"teacher": [record.keys["teacher"][i] for i in subset]},
                                        [record.labels[i] for i in subset], [record.lengths[i] for i in subset]))
    t0 = time.perf_counter()
    start = new_student(teacher.outputs.model, tok, train)
    result = search(start, teacher.source("search"), teacher.source("val"), trials=plan.search_trials,
                    space=SearchSpace(alpha=(0.0, 1.0), temperature=(1.0, 10.0), lr=(5e-5, 5e-4), epochs=(1, 3)),
                    progress=False)
    out = {**result.to_dict(), "seconds": time.perf_counter() - t0, "subset": len(subset)}
    cache.record["search"] = out
    cache.record_path.write_text(json.dumps(cache.record, indent=2, default=str))
    return out


def train_all(args, plan: Plan, cache: Cache, teacher, tok, names) -> dict:
    """Every student variant (cached): name -> (model, training seconds)."""
    from ember.compress import (
        DistillConfig,
        MagnitudePruneConfig,
        QATConfig,
        StructuredPruneConfig,
        distill,
        prune,
        qat,
    )

    source = teacher.source("train")
    best = choose_settings(plan, cache, teacher, tok, names)["best"]
    tuned = DistillConfig(alpha=best["alpha"], temperature=best["temperature"], lr=best["lr"], epochs=plan.student_epochs)
    plain = DistillConfig(alpha=1.0, lr=best["lr"], epochs=plan.student_epochs)
    fresh = lambda: new_student(teacher.outputs.model, tok, source)  # noqa: E731
    out = {}
    out["student-plain"] = train_student("student-plain", cache, tok, fresh,
                                         lambda m: distill(m, source, plain, progress=False).to_dict())
    out["student-distilled"] = train_student("student-distilled", cache, tok, fresh,
                                             lambda m: distill(m, source, tuned, progress=False).to_dict())
    distilled = out["student-distilled"][0]
    pruning = StructuredPruneConfig(heads=args.heads, ffn=args.ffn)
    recover = DistillConfig(**{**tuned.to_dict(), "epochs": plan.prune_epochs, "hidden_map": ()})
    out["pruned"] = train_student("pruned", cache, tok, lambda: copy.deepcopy(distilled),
                                  lambda m: prune(m, pruning, source=source, train=recover, progress=False).to_dict())
    q = QATConfig(target="onnx", distill=DistillConfig(alpha=tuned.alpha, temperature=tuned.temperature,
                                                     lr=2e-5, epochs=plan.qat_epochs, warmup=0.0))
    out["pruned-qat"] = train_student("pruned-qat", cache, tok, lambda: copy.deepcopy(out["pruned"][0]),
                                      lambda m: {"report": qat(m, source, q, inplace=True, progress=False).report.to_dict()})
    # the teacher's own depth, pruned in width: halving the depth cost 4.3 pt on CLINC150 (BENCHMARKS.md), pruning
    # half the heads and FFN neurons of the 3-layer student cost nothing measurable, so the "best combination"
    # candidate keeps every layer and removes width instead (distilled from the stored outputs while it recovers)
    every_layer = list(range(teacher.outputs.model.config.num_hidden_layers))
    whole_depth = lambda: new_student(teacher.outputs.model, tok, source, every_layer)  # noqa: E731
    out["deep-pruned"] = train_student("deep-pruned", cache, tok, whole_depth,
                                       lambda m: prune(m, pruning, source=source, train=recover, progress=False).to_dict())
    out["deep-pruned-qat"] = train_student("deep-pruned-qat", cache, tok, lambda: copy.deepcopy(out["deep-pruned"][0]),
                                           lambda m: {"report": qat(m, source, q, inplace=True, progress=False).report.to_dict()})
    sparse = MagnitudePruneConfig(sparsity=0.9)
    sparse_run = DistillConfig(**{**tuned.to_dict(), "epochs": plan.sparse_epochs, "hidden_map": ()})
    out["sparse90"] = train_student("sparse90", cache, tok, lambda: copy.deepcopy(distilled),
                                    lambda m: prune(m, sparse, source=source, train=sparse_run, progress=False).to_dict())
    # each time counts what the variant starts from (the distilled student, the pruned one)
    d, p = out["student-distilled"][1], out["pruned"][1]
    out["pruned"] = (out["pruned"][0], p + d)
    out["pruned-qat"] = (out["pruned-qat"][0], out["pruned-qat"][1] + p + d)
    out["sparse90"] = (out["sparse90"][0], out["sparse90"][1] + d)
    out["deep-pruned-qat"] = (out["deep-pruned-qat"][0], out["deep-pruned-qat"][1] + out["deep-pruned"][1])
    return out


# ---- measuring -----------------------------------------------------------------------------------------
def epoch_time_ratio(plan: Plan, teacher, tok, train, names, start_model) -> dict:
    """Distillation steps from the store against the same steps running the teacher, interleaved on the
    same batches (identical students, optimizers and losses)."""
    from ember.batching import grouped_batches
    from ember.compress import distillation_loss

    stored, live = teacher.source("train"), teacher.live(train.texts, train.label_ids(names))
    students = [copy.deepcopy(start_model).train() for _ in range(2)]
    optims = [torch.optim.AdamW(m.parameters(), lr=1e-4, fused=True) for m in students]
    batches = grouped_batches(stored.lengths(), 32, seed=0)[: plan.ratio_batches]
    times: dict[str, list[float]] = {"store": [], "teacher": []}
    for k, idx in enumerate(batches):
        for j in ((0, 1) if k % 2 == 0 else (1, 0)):  # alternate who goes first
            name, source = (("store", stored), ("teacher", live))[j]
            t0 = time.perf_counter()
            b = source.batch(idx)
            out = students[j](**b.model_inputs())
            loss = distillation_loss(out.logits, b.logits, b.labels, alpha=0.5, temperature=2.0)
            optims[j].zero_grad(set_to_none=True)
            loss.backward()
            optims[j].step()
            times[name].append(time.perf_counter() - t0)
    per_epoch = (len(stored) + 31) // 32
    total = {k: sum(v) for k, v in times.items()}
    return {"batches": len(batches), "median_step_ms": {k: statistics.median(v) * 1e3 for k, v in times.items()},
            "projected_epoch_s": {k: total[k] / len(batches) * per_epoch for k in total},
            "ratio_teacher_every_step_over_store": total["teacher"] / total["store"]}


def torchao_export_probe(model, tok, sample) -> dict:
    """What happens when torchao's *converted* int8 model is exported (the route QAT does not take)."""
    from ember.compress import QATConfig
    from ember.compress.quantization import convert, prepare
    from ember.optimize import OnnxRuntimeConfig, optimize, preset

    m = copy.deepcopy(model)
    cfg = QATConfig(target="torchao")
    convert(m, cfg, prepare(m, cfg))
    out = {"weight_type": type(next(x for x in m.modules() if isinstance(x, torch.nn.Linear)).weight).__name__}
    for name, config in (("onnx (torchscript exporter)", preset("onnx")), ("openvino", preset("openvino")),
                         ("onnx (dynamo exporter)", OnnxRuntimeConfig(exporter="dynamo"))):
        try:
            art = optimize(m, config, tokenizer=tok, sample=sample)
            import onnx  # what the graph computes in

            ops = {}
            if hasattr(art, "model_bytes"):
                for n in onnx.load_from_string(art.model_bytes).graph.node:
                    ops[n.op_type] = ops.get(n.op_type, 0) + 1
            out[name] = {"built": True, "size_mb": art.size_bytes / 1e6, "int8_ops": sum(v for k, v in ops.items() if "Integer" in k or "QAttention" in k or k == "DynamicQuantizeLinear"),
                         "float_fake_quant_ops": ops.get("Round", 0)}
        except Exception as exc:
            out[name] = {"built": False, "error": f"{type(exc).__name__}: {str(exc).splitlines()[0][:200]}"}
    return out


def build_variants(args, cache: Cache, teacher_model, tok, students: dict, sample, recalibrate=None,
                   served_offsets: dict | None = None) -> list:
    """Every row of the table as a harness Variant (engines built here; their build time counted). With
    ``recalibrate(model, artifact)``, each engine's out-of-scope offset is chosen again on its own logits (int8
    moves the margin) and the engine rebuilt with it; what was chosen goes into ``served_offsets``."""
    from ember.bench import Variant
    from ember.compress import quantize_embeddings
    from ember.optimize import optimize, preset

    def engine(label: str, model, name: str, trained: float, int8_emb: bool = True):
        log(f"building {label}")
        started = time.perf_counter()
        m = copy.deepcopy(model)
        if int8_emb:
            quantize_embeddings(m)
        art = optimize(m, preset(name), tokenizer=tok, sample=sample)
        if recalibrate is not None:  # the offset the engine's own logits need, then the artifact again with it
            served_offsets[label] = recalibrate(m, art)
            art = optimize(m, preset(name), tokenizer=tok, sample=sample)
        return Variant(label, art, size_bytes=art.size_bytes, build_seconds=trained + time.perf_counter() - started)

    t_teacher = cache.seconds("teacher")
    rows = [Variant("teacher fp32 (PyTorch)", teacher_model, reference=True, build_seconds=t_teacher)]
    for name in ("onnx-int8", "openvino-int8"):
        rows.append(engine(f"teacher {name}", teacher_model, name, t_teacher, int8_emb=False))
    plain, distilled, pruned = students["student-plain"], students["student-distilled"], students["pruned"]
    rows += [Variant("3L plain fine-tune (PyTorch)", plain[0], build_seconds=plain[1]),
             Variant("3L distilled (PyTorch)", distilled[0], build_seconds=distilled[1])]
    for name in ("onnx-int8", "openvino-int8"):
        rows.append(engine(f"3L distilled {name}", distilled[0], name, distilled[1]))
    heads = f"h{round(args.heads * 100)}f{round(args.ffn * 100)}"
    rows += [Variant(f"3L pruned {heads} (PyTorch)", pruned[0], build_seconds=pruned[1]),
             engine(f"3L pruned {heads} onnx-int8 (PTQ)", pruned[0], "onnx-int8", pruned[1])]
    qat_model, t_qat = students["pruned-qat"]
    rows += [engine(f"3L pruned {heads} QAT onnx-int8", qat_model, "onnx-int8", t_qat),
             engine(f"3L pruned {heads} QAT openvino-int8", qat_model, "openvino-int8", t_qat)]
    depth = teacher_model.config.num_hidden_layers
    deep, deep_qat = students["deep-pruned"], students["deep-pruned-qat"]
    rows += [Variant(f"{depth}L pruned {heads} (PyTorch)", deep[0], build_seconds=deep[1]),
             engine(f"{depth}L pruned {heads} QAT onnx-int8", deep_qat[0], "onnx-int8", deep_qat[1]),
             engine(f"{depth}L pruned {heads} QAT openvino-int8", deep_qat[0], "openvino-int8", deep_qat[1])]
    sparse, t_sparse = students["sparse90"]
    rows += [Variant("3L 90%-sparse (PyTorch)", sparse, build_seconds=t_sparse),
             engine("3L 90%-sparse onnx-int8", sparse, "onnx-int8", t_sparse)]
    return rows


def summarize(report, plan: Plan) -> dict:
    """Speed-up, accuracy delta and size ratio of every row against the fp32 PyTorch teacher, and the best."""
    ref = report.reference
    rows = {}
    for r in report.results:
        if r.error or r.p50 is None or r.accuracy is None:
            rows[r.name] = {"error": r.error}
            continue
        rows[r.name] = {"latency_speedup_vs_teacher": ref.p50 / r.p50,
                        "accuracy_delta_points": (r.accuracy - ref.accuracy) * 100.0,
                        "size_ratio": (ref.size_mb / r.size_mb) if r.size_mb else None,
                        "throughput_ratio": r.throughput / ref.throughput if r.throughput and ref.throughput else None}
    within = [(n, v) for n, v in rows.items() if "error" not in v and n != ref.name and v["accuracy_delta_points"] >= -1.0]
    best_name, best = max(within, key=lambda kv: kv[1]["latency_speedup_vs_teacher"]) if within else (None, None)
    summary = {"best": None if best is None else {"variant": best_name, **{k: best[k] for k in (
        "latency_speedup_vs_teacher", "accuracy_delta_points", "size_ratio")}}, "rows": rows}
    if best is not None:
        summary["targets"] = {"speedup_10x": best["latency_speedup_vs_teacher"] >= 10.0,
                              "within_1_point": best["accuracy_delta_points"] >= -1.0,
                              "size_8x": (best["size_ratio"] or 0) >= 8.0}
    return summary


def parse_args(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--data", default=str(DEFAULT_DATA), help="training data (any ember format; CLINC150 by default)")
    ap.add_argument("--model", default=None, help="teacher base model folder (default: packaged all-MiniLM-L6-v2)")
    ap.add_argument("--text-column", default=None)
    ap.add_argument("--label-column", default=None)
    ap.add_argument("--train-split", default="train")
    ap.add_argument("--val-split", default="val", help="validation split (missing: 10%% of train is held out)")
    ap.add_argument("--test-split", default="test")
    ap.add_argument("--no-oos", dest="oos", action="store_false", help="leave CLINC150's out-of-scope examples out")
    ap.add_argument("--max-length", type=int, default=64, help="truncation length in tokens")
    ap.add_argument("--heads", type=float, default=0.5, help="fraction of attention heads structured pruning removes")
    ap.add_argument("--ffn", type=float, default=0.5, help="fraction of feed-forward neurons structured pruning removes")
    ap.add_argument("--quick", action="store_true", help="small subsets and one epoch each: a smoke test in minutes")
    ap.add_argument("--set", dest="overrides", action="append", default=[], metavar="FIELD=VALUE",
                    help="change one field of the plan (e.g. --set teacher_epochs=2 --set search_trials=4), repeatable")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--cache-dir", default="/tmp/ember-bench-compression", help="trained models, teacher store")
    ap.add_argument("--retrain", action="store_true", help="ignore cached models and train again")
    ap.add_argument("--no-probe", action="store_true",
                    help="skip exporting torchao's converted int8 model (a property of the exporters, not of the data)")
    ap.add_argument("--accuracy-only", action="store_true",
                    help="accuracy, agreement and size of every row, without timing (no lock needed; "
                         "latency and throughput columns are then meaningless and the summary's speed-ups too)")
    ap.add_argument("--verbose", action="store_true", help="also show the libraries' own logs and progress bars")
    ap.add_argument("--breakdown", action="store_true",
                    help="after training: each PyTorch model's test accuracy on in-scope examples and its recall and "
                         "precision on the out-of-scope label (--oos-label), no timing (where the points go)")
    ap.add_argument("--oos-label", default="oos", help="the out-of-scope (reject) label, for --calibrate and --breakdown")
    ap.add_argument("--calibrate", choices=("balanced", "accuracy", "none"), default="balanced",
                    help="choose each model's out-of-scope logit offset on the validation split before measuring "
                         "(balanced: mean of in-scope accuracy and oos recall; accuracy: plain accuracy; none: as trained)")
    ap.add_argument("--train-only", action="store_true", help="train and cache every variant, measure nothing")
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "compression"),
                    help="report.md, report.json and the accuracy-vs-latency plot go here")
    return ap.parse_args(argv)


def cache_for(args, plan: Plan) -> Cache:
    key = json.dumps([str(Path(args.data).resolve()), args.model, args.oos, args.max_length, args.heads, args.ffn,
                      args.text_column, args.label_column, plan.__dict__], sort_keys=True)
    import hashlib

    return Cache(Path(args.cache_dir) / hashlib.blake2b(key.encode(), digest_size=6).hexdigest(), args.retrain)


def reject_calibrator(args, tok, val, names):
    """``calibrate(model, served=None)``: the out-of-scope offset chosen on the validation split (on ``served``'s
    logits when given) and added to ``model``'s output bias. ``None`` with ``--calibrate none``, no reject class, or
    a validation split without one."""
    if args.calibrate == "none" or args.oos_label not in names:
        return None
    from ember.compress import calibrate_reject

    reject, gold = names.index(args.oos_label), val.label_ids(names)
    if reject not in gold:
        log(f"not calibrated: the validation split has no {args.oos_label!r} example")
        return None
    return lambda model, served=None: calibrate_reject(model, tok, val.texts, gold, reject, criterion=args.calibrate,
                                                       max_length=args.max_length, served=served)


def calibrate_all(args, calibrate, models: dict) -> dict:
    """Each model calibrated in place; what was chosen and what it did on validation, per model."""
    out = {}
    for name, model in models.items():
        choice = calibrate(model)
        out[name] = choice.to_dict()
        log(f"calibrated {name}: {args.oos_label} logit {choice.bias:+.2f}; validation oos recall "
            f"{choice.before['reject_recall']:.3f} -> {choice.after['reject_recall']:.3f}, in-scope "
            f"{choice.before['in_scope_accuracy']:.4f} -> {choice.after['in_scope_accuracy']:.4f}")
    return out


def measure(args, plan: Plan, cache: Cache, teacher, tok, data, students) -> tuple[dict, object]:
    from ember.bench import BenchConfig, PerformanceBenchmark

    train, val, test, oos, names = data
    sample = val.texts[:128]
    load_before = load_average()
    log(f"measuring (load average {load_before})")
    ratio = None if args.accuracy_only else epoch_time_ratio(plan, teacher, tok, train, names, students["student-plain"][0])
    log(f"epoch-time ratio: {ratio}")
    probe = None if args.no_probe else torchao_export_probe(students["pruned"][0], tok, sample)
    teacher_model = copy.deepcopy(teacher.outputs.model)  # the store's teacher keeps the weights it was filled with
    calibrate, calibration, recalibrate, served = reject_calibrator(args, tok, val, names), {}, None, {}
    if calibrate is not None:
        calibration = calibrate_all(args, calibrate, {"teacher": teacher_model} | {n: m for n, (m, _) in students.items()})
        recalibrate = lambda m, art: calibrate(m, served=art).to_dict()  # noqa: E731
    variants = build_variants(args, cache, teacher_model, tok, students, sample, recalibrate, served)
    config = BenchConfig(batch_size=32, latency_samples=plan.latency_samples, throughput_examples=plan.throughput_examples,
                         threads=args.threads, max_length=args.max_length, repeats=plan.repeats)
    bench = PerformanceBenchmark(tok, test.texts, test.label_ids(names), config, label_names=names, progress=False,
                                 model_name=args.model or "all-MiniLM-L6-v2 (packaged)", data_name=f"{args.data}:{args.test_split}")
    load_bench = load_average()
    report = bench.run(variants)
    extra = {"epoch_time_ratio": ratio, "torchao_convert_export": probe, "calibration_criterion": args.calibrate,
             "calibration": calibration, "calibration_served": served,
             "load_average": {"before_ratio": load_before, "before_harness": load_bench, "after": load_average()}}
    return extra, report


def _group_scores(gold: list[int], pred: list[int], oos: int | None) -> dict:
    pairs = list(zip(gold, pred, strict=True))
    inside = [(g, p) for g, p in pairs if g != oos]
    row = {"accuracy": sum(g == p for g, p in pairs) / len(pairs),
           "in_scope_accuracy": sum(g == p for g, p in inside) / len(inside), "in_scope_examples": len(inside)}
    if oos is not None:
        said_oos = [g for g, p in pairs if p == oos]
        is_oos = [p for g, p in pairs if g == oos]
        row |= {"oos_recall": sum(p == oos for p in is_oos) / max(len(is_oos), 1), "oos_examples": len(is_oos),
                "oos_precision": sum(g == oos for g in said_oos) / max(len(said_oos), 1),
                "in_scope_called_oos": sum(p == oos for _, p in inside)}
    return row


def _oos_auroc(logits: torch.Tensor, gold: list[int], oos: int) -> float:
    """How well the out-of-scope logit's margin over the best other class ranks out-of-scope examples above
    in-scope ones (area under the ROC curve; 1.0 = a threshold separates them perfectly). It does not depend on
    any offset, so it tells lost knowledge (lower AUROC) from a moved threshold (same AUROC, other recall)."""
    others = logits.clone()
    others[:, oos] = float("-inf")
    margin = logits[:, oos] - others.max(-1).values
    positive = torch.tensor(gold) == oos
    ranks = torch.empty(len(margin))
    ranks[margin.argsort()] = torch.arange(1, len(margin) + 1, dtype=torch.float)  # float margins: ties negligible
    n_pos, n_neg = int(positive.sum()), int((~positive).sum())
    return float((ranks[positive].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def breakdown(args, cache: Cache, teacher_model, tok, val, test, names, students) -> dict:
    """In-scope accuracy and out-of-scope recall/precision of the teacher and each PyTorch student on the test
    split, as trained and (unless ``--calibrate none``) with the out-of-scope offset chosen on validation: CLINC150's
    accuracy mixes 4,500 in-scope examples with 1,000 out-of-scope ones, and the two move apart."""
    from ember.compress import choose_reject_bias
    from ember.compress.evaluate import predict_logits

    models = {"teacher": teacher_model} | {name: model for name, (model, _) in students.items() if not name.endswith("-qat")}
    gold = test.label_ids(names)
    oos = names.index(args.oos_label) if args.oos_label in names else None
    out = {}
    for name, model in models.items():
        logits = predict_logits(model, tok, test.texts, max_length=args.max_length)
        rows = {"as trained": (0.0, logits)}
        if oos is not None and args.calibrate != "none":
            val_logits = predict_logits(model, tok, val.texts, max_length=args.max_length)
            bias = choose_reject_bias(val_logits, val.label_ids(names), oos, args.calibrate).bias
            shifted = logits.clone()
            shifted[:, oos] += bias
            rows[f"calibrated ({args.calibrate})"] = (bias, shifted)
        auroc = None if oos is None else _oos_auroc(logits, gold, oos)
        for how, (bias, scores) in rows.items():
            row = _group_scores(gold, scores.argmax(-1).tolist(), oos) | {"oos_bias": bias, "oos_auroc": auroc}
            out[f"{name} {how}"] = row
            print(f"{name:>18} {how:>21}: accuracy {row['accuracy']:.4f}  in-scope {row['in_scope_accuracy']:.4f} "
                  f"({row['in_scope_examples']})" + (f"  oos recall {row['oos_recall']:.4f} ({row['oos_examples']}) "
                                                     f"precision {row['oos_precision']:.4f}; in-scope called oos "
                                                     f"{row['in_scope_called_oos']}; offset {bias:+.2f}; "
                                                     f"AUROC {auroc:.4f}"
                                                     if oos is not None else ""), flush=True)
    return out


def plan_for(args) -> Plan:
    """The full or quick plan with ``--set FIELD=VALUE`` changes (a reduced run says exactly what it reduced)."""
    plan = QUICK if args.quick else FULL
    changes = {}
    for item in args.overrides:
        field, _, value = item.partition("=")
        if field not in Plan.__dataclass_fields__ or not value:
            raise SystemExit(f"--set {item!r}: expected FIELD=VALUE with FIELD one of {', '.join(Plan.__dataclass_fields__)}")
        changes[field] = None if value.lower() == "none" else int(value)
    return dataclasses.replace(plan, **changes)


def main(argv=None) -> dict:
    args = parse_args(argv)
    from ember.cli.quiet import quiet

    with quiet(args.verbose):  # the libraries' own notes and bars (transformers' load report) behind --verbose
        return run(args)


def run(args) -> dict:
    """Train (or find cached), measure, report; the result dict is also the last stdout line."""
    plan = plan_for(args)
    torch.set_num_threads(args.threads)
    started = time.time()
    data = load_data(args, plan)
    train, val, test, oos, names = data
    log(f"data: {len(train)} train, {len(val)} val, {len(test)} test examples, {len(names)} classes, oos={oos}")
    cache = cache_for(args, plan)
    teacher_model, tok = fine_tune_teacher(args, plan, cache, train, names)
    teacher, fills = fill_teacher(args, cache, teacher_model, tok, train, val, names)
    students = train_all(args, plan, cache, teacher, tok, names)
    result = {"benchmark": "compression", "data": args.data, "model": args.model or "all-MiniLM-L6-v2 (packaged)",
              "oos_included": oos, "train_examples": len(train), "val_examples": len(val), "test_examples": len(test),
              "classes": len(names), "quick": args.quick, "plan": plan.__dict__, "threads": args.threads, "torch": torch.__version__,
              "cpu": cpu_model(), "teacher_store": fills, "search": cache.record.get("search"),
              "training_seconds": {k: v.get("seconds") for k, v in cache.record.items() if isinstance(v, dict)}}
    if args.breakdown:
        result["breakdown"] = breakdown(args, cache, teacher_model, tok, val, test, names, students)
        print(json.dumps(result, default=str))
        return result
    if args.train_only:
        result["summary"] = {"best": None, "note": "--train-only: nothing measured"}
        print(json.dumps(result, default=str))
        return result
    if args.accuracy_only:  # a few timing samples only: the harness needs some; their figures mean nothing
        plan = dataclasses.replace(plan, latency_samples=3, throughput_examples=32, repeats=1)
    extra, report = measure(args, plan, cache, teacher, tok, data, students)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    report.write(out)
    (out / "report.md").write_text(report.to_markdown())
    result.update(extra)
    result["rows"] = [r.to_dict() for r in report.results]
    result["summary"] = summarize(report, plan)
    if args.accuracy_only:
        result["summary"]["note"] = "--accuracy-only: speed-ups (and so 'best') were not measured; read accuracy and size"
    result["wall_seconds"] = time.time() - started
    print(report.to_markdown(), file=sys.stderr)
    print(json.dumps(result, default=str))
    return result


if __name__ == "__main__":
    main()
