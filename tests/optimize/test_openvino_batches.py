"""OpenVINO batches on shape-specialised models (``OpenVINOConfig.batch_shapes``): chosen from the sample, the same
answers as the dynamic model, in order, with remainders and out-of-range lengths on the dynamic model."""

from __future__ import annotations

import json

import pytest

from ember.optimize import OpenVINOConfig, config_from_dict, load, optimize

from conftest import make_model

pytest.importorskip("openvino")

WORDS = ["what", "is", "the", "weather", "like", "in", "paris", "this", "weekend", "please", "tell", "me", "now"]
TEXTS = [" ".join(WORDS[:n]) for n in range(1, len(WORDS) + 1)]  # 3 .. 15 tokens


class _PartsSeen:
    """Wraps a static batch model and records the padded length and rows of every call it ran."""

    def __init__(self, parts) -> None:
        self.parts, self.calls = parts, []
        self.rows, self.requests, self.inputs = parts.rows, parts.requests, parts.inputs

    def __call__(self, arrays, length, per_token):
        self.calls.append((self.parts.length, len(arrays["input_ids"]), length))
        return self.parts(arrays, length, per_token)


def test_batch_shapes_are_placed_where_they_spare_the_sample_the_most_work():
    from ember.optimize.backends.openvino import STATIC_COST, choose_batch_shapes, serves

    # short texts: a token of padding is a large share of a batch, so the shapes sit on the sample's own lengths
    assert choose_batch_shapes([7, 9, 10, 10, 11, 11, 11, 12, 12, 14, 20]) == (7, 9, 10, 11, 12, 14, 20)
    # fewer allowed: the ones that spare the most (11 also serves the 10s, padded by one token)
    assert choose_batch_shapes([7, 9, 10, 10, 11, 11, 11, 12, 12, 14, 20], max_count=3) == (11, 12, 20)
    # long texts: each shape serves the lengths it pads by at most ~11%, so 8 cover every length from 63 up
    shapes = choose_batch_shapes(list(range(40, 123)))
    assert shapes == (69, 76, 84, 92, 99, 107, 114, 122)
    assert all(any(serves(s, n) for s in shapes) for n in range(63, 123))
    assert not any(serves(s, 62) for s in shapes)  # 69 would pad 62 by 11.3%: slower than the dynamic model
    # a length too rare to be worth a model's memory gets none; never past the model's max length
    assert choose_batch_shapes([10] * 999 + [30]) == (10,)
    assert choose_batch_shapes([600, 600], max_length=512) == (512,)
    assert choose_batch_shapes([10], max_count=0) == choose_batch_shapes([]) == ()
    assert serves(10, 10) and serves(11, 10) and not serves(12, 10) and not serves(9, 10) and STATIC_COST < 1


def test_batch_shapes_are_chosen_where_batches_run_in_bf16_or_int8_not_f32(tokenizer):
    from ember.optimize.backends.openvino import batches_gain

    assert batches_gain(OpenVINOConfig(precision="bf16")) and batches_gain(OpenVINOConfig(quantize="static"))
    assert batches_gain(OpenVINOConfig(batch_precision="bf16"))
    assert not batches_gain(OpenVINOConfig()) and not batches_gain(OpenVINOConfig(precision="bf16", batch_precision="f32"))
    # f32 batches lost to the dynamic model (AVX2 Zen 3): the default chooses none, recorded so a load does the same
    art = optimize(make_model("bert-base"), OpenVINOConfig(threads=1, batch_rows=2, static_shapes=()),
                   tokenizer=tokenizer, sample=TEXTS)
    assert art.optimize_config.batch_shapes == () and art.batch_static == {}


def test_batches_run_on_static_parts_with_the_dynamic_models_answers(tokenizer, tmp_path, monkeypatch):
    import ember.optimize.backends.openvino as ov_backend

    # the choice as it is made for bf16 / int8 batches, kept in f32 so the answers can be compared exactly; the
    # build's timing of the batch models against the dynamic model is tested on its own (below): kept here
    monkeypatch.setattr(ov_backend, "batches_gain", lambda config: True)
    monkeypatch.setattr(ov_backend, "CHOICE_MARGIN", float("-inf"))
    model = make_model("bert-base")
    lengths = sorted(len(tokenizer(t)["input_ids"]) for t in TEXTS)
    art = optimize(model, OpenVINOConfig(threads=2, batch_rows=2, static_shapes=()), tokenizer=tokenizer, sample=TEXTS)
    from ember.optimize.backends.openvino import choose_batch_shapes

    shapes = (8, 9, 10, 11, 12, 13, 14, 15)  # the count bound (8) keeps those that spare most: 3-7 left out
    assert art.optimize_config.batch_shapes == choose_batch_shapes(lengths, 8, 48) == shapes
    assert sorted(art.batch_static) == list(shapes)  # compiled up front: no request pays for a compile
    dynamic = optimize(model, OpenVINOConfig(threads=2, static_shapes=(), batch_shapes=()), tokenizer=tokenizer)
    assert dynamic.batch_static == {}
    assert art.batch_choice is not None and art.batch_choice.kept == "batch models"
    streams = len(art.batch_static[15].requests)
    assert streams == 2  # 2 threads: two streams of one thread, a part of 2 rows each
    art.batch_static = {n: _PartsSeen(p) for n, p in art.batch_static.items()}
    seen = {n: p.calls for n, p in art.batch_static.items()}
    for rows, texts in ((4, TEXTS[4:8]), (5, TEXTS[8:13]), (2, TEXTS[:2]), (9, TEXTS[4:]), (3, TEXTS[8:11])):
        x = tokenizer(texts, padding=True, return_tensors="pt")
        got, want = art(**x).last_hidden_state, dynamic(**x).last_hidden_state
        assert got.shape == want.shape == (rows, x["input_ids"].shape[1], 32)  # padding taken off again
        assert (got - want).abs().max().item() < 1e-4  # the same answers, rows in order
    # parts in whole rounds (a part alone would leave the other stream's thread idle): 4 rows of 10 tokens -> one
    # call of 4 rows at 10; 5 rows of 15 -> 4 rows at 15, the fifth dynamic; 2 rows of 4 tokens (one part, and no
    # shape) -> dynamic; 9 rows of 15 -> 8 at 15, the ninth dynamic; 3 rows of 13 -> dynamic
    assert seen[10] == [(10, 4, 10)] and seen[15] == [(15, 4, 15), (15, 8, 15)]
    assert all(calls == [] for n, calls in seen.items() if n not in (10, 15))
    classifier = make_model("bert")
    logits = optimize(classifier, OpenVINOConfig(threads=1, batch_rows=2, static_shapes=()), tokenizer=tokenizer,
                      sample=TEXTS)
    assert logits.batch_static
    x = tokenizer(TEXTS[2:7], padding=True, return_tensors="pt")
    assert (logits(**x).logits - classifier(**x).logits).abs().max().item() < 1e-4  # one row per input: nothing to cut
    # the chosen shapes are saved: a loaded artifact compiles the same ones
    back = load(art.save(tmp_path / "ov"))
    assert back.optimize_config.batch_shapes == shapes and sorted(back.batch_static) == list(shapes)


def test_batches_beyond_the_shapes_or_padded_too_far_stay_dynamic(tokenizer):
    art = optimize(make_model("bert-base"), OpenVINOConfig(threads=1, batch_rows=2, static_shapes=(),
                                                           batch_shapes=(16,)), tokenizer=tokenizer)
    assert art._batch_model(16) is art.batch_static[16] and art._batch_model(15) is art.batch_static[16]
    assert art._batch_model(14) is None  # 2 tokens of padding on 14 (14%): slower than the dynamic model
    assert art._batch_model(17) is None  # past the last shape
    dynamic = optimize(make_model("bert-base"), OpenVINOConfig(threads=1, static_shapes=(), batch_shapes=()),
                       tokenizer=tokenizer)
    art.batch_static = {16: _PartsSeen(art.batch_static[16])}
    x = tokenizer([TEXTS[-1]] * 2, padding=True, return_tensors="pt")  # 15 tokens: padded to 16, then cut back
    got, want = art(**x).last_hidden_state, dynamic(**x).last_hidden_state
    assert got.shape == (2, 15, 32) and (got - want).abs().max().item() < 1e-4
    assert art.batch_static[16].calls == [(16, 2, 15)]
    x = tokenizer([" ".join(WORDS + WORDS[:4])] * 2, padding=True, return_tensors="pt")  # 19 tokens: the dynamic model
    assert art(**x).last_hidden_state.shape == (2, 19, 32) and art.batch_static[16].calls == [(16, 2, 15)]


def test_batch_models_are_bounded_by_count_and_memory(tokenizer):
    model = make_model("bert-base")
    shapes = (8, 12, 16, 20)
    one = optimize(model, OpenVINOConfig(threads=1, static_shapes=(), batch_shapes=shapes, max_batch_static=1),
                   tokenizer=tokenizer)
    assert sorted(one.batch_static) == [20]  # the longest: a batch's time grows with its length
    none = optimize(model, OpenVINOConfig(threads=1, static_shapes=(), batch_shapes=shapes, batch_memory_mb=0),
                    tokenizer=tokenizer)
    assert none.batch_static == {}
    x = tokenizer(TEXTS[:3], padding=True, return_tensors="pt")
    assert (none(**x).last_hidden_state - model(**x).last_hidden_state).abs().max().item() < 1e-4


def test_batch_settings_are_checked_and_old_configs_load():
    with pytest.raises(ValueError, match=r"batch_rows=1 must be an int >= 2"):
        OpenVINOConfig(batch_rows=1)
    with pytest.raises(ValueError, match=r"batch_shapes=\(16, 8\) must be increasing token lengths"):
        OpenVINOConfig(batch_shapes=(16, 8))
    with pytest.raises(ValueError, match=r"batch_memory_mb=-1 must be >= 0"):
        OpenVINOConfig(batch_memory_mb=-1)
    # saved before batch shapes: loads with none recorded, so a loaded artifact compiles none (as it was built)
    old = {k: v for k, v in OpenVINOConfig().to_dict().items()
           if k not in ("batch_shapes", "batch_rows", "max_batch_static", "batch_memory_mb")}
    assert config_from_dict(old).batch_shapes is None


def _timed_forward(art, costs: dict[bool, float], now: list[float]):
    """``art._forward`` that advances the fake clock ``now`` by ``costs[batch_models]`` per call."""
    real = art._forward

    def forward(arrays, batch_models=True):
        now[0] += costs[batch_models]
        return real(arrays, batch_models)

    return forward


def test_the_build_keeps_the_batch_models_only_where_they_are_faster(tokenizer, tmp_path):
    from ember.optimize.backends.openvino import CHOICE_MARGIN, keep_faster_batches

    model = make_model("bert-base")
    cfg = OpenVINOConfig(threads=2, batch_rows=2, static_shapes=(), batch_shapes=(6, 10, 14))
    faster = optimize(model, cfg, tokenizer=tokenizer)
    assert faster.batch_choice is None and sorted(faster.batch_static) == [6, 10, 14]  # asked for: not timed
    now = [0.0]
    faster._forward = _timed_forward(faster, {True: 1.0, False: 1.2}, now)
    choice = keep_faster_batches(faster, tokenizer, TEXTS, clock=lambda: now[0], budget_s=100.0)
    # 13 texts -> 3 full batches of 4 rows (2 streams x 2 rows; 3-6, 7-10, 11-14 tokens), each timed both ways in
    # 3 rounds
    assert (choice.batches, choice.batch, choice.rounds) == (3, 4, 3)
    assert choice.kept == "batch models" and choice.speedup == pytest.approx(1.2)
    assert sorted(faster.batch_static) == [6, 10, 14] and faster.optimize_config.batch_shapes == (6, 10, 14)

    level = optimize(model, cfg, tokenizer=tokenizer)
    level._forward = _timed_forward(level, {True: 1.0, False: 1.0 + CHOICE_MARGIN / 2}, now)
    choice = keep_faster_batches(level, tokenizer, TEXTS, clock=lambda: now[0])
    assert choice.rounds == 1  # the fake seconds passed the budget after the first round
    # within the margin: not worth their memory; dropped, and recorded so a load compiles none
    assert choice.kept == "dynamic" and level.batch_static == {} and level.optimize_config.batch_shapes == ()
    x = tokenizer(TEXTS[4:8], padding=True, return_tensors="pt")
    assert (level(**x).last_hidden_state - model(**x).last_hidden_state).abs().max().item() < 1e-4
    back = load(level.save(tmp_path / "ov"))
    assert back.optimize_config.batch_shapes == () and back.batch_static == {}

    few = optimize(model, cfg, tokenizer=tokenizer)
    assert keep_faster_batches(few, tokenizer, TEXTS[:3]) is None  # no full batch to time: kept as chosen
    assert few.batch_choice is None and sorted(few.batch_static) == [6, 10, 14]


def test_shapes_chosen_by_the_build_are_timed_and_dropped_when_slower(tokenizer, monkeypatch, tmp_path):
    import ember.optimize.backends.openvino as ov_backend

    monkeypatch.setattr(ov_backend, "batches_gain", lambda config: True)
    monkeypatch.setattr(ov_backend, "CHOICE_MARGIN", float("inf"))  # the batch models can never be faster enough
    stages: list[str] = []
    art = optimize(make_model("bert-base"), OpenVINOConfig(threads=2, batch_rows=2, static_shapes=()),
                   tokenizer=tokenizer, sample=TEXTS, progress=stages.append)
    assert art.batch_choice is not None and art.batch_choice.kept == "dynamic"
    assert art.optimize_config.batch_shapes == () and art.batch_static == {}
    assert any("dropped, batches run dynamic" in s for s in stages)
    # what the build measured stays with the artifact, figures and all, through a save and a load
    assert art.build_notes == [art.batch_choice.describe()] and "dropped, batches run dynamic" in art.build_notes[0]
    assert f"x{art.batch_choice.speedup:.2f} the dynamic model" in art.build_notes[0]
    saved = art.save(tmp_path / "ov")
    assert load(saved).build_notes == art.build_notes
    manifest = json.loads((saved / "ember-artifact.json").read_text())
    (saved / "ember-artifact.json").write_text(json.dumps({k: v for k, v in manifest.items() if k != "build_notes"}))
    assert load(saved).build_notes == []  # saved before build notes were: none
