"""Logits through train/use on float32 stored states equal the plain model's to <= 1e-5."""

from __future__ import annotations

import pytest
import torch

from ember.errors import MissingEntriesError
from ember.recycle import Recycler

from conftest import FAMILIES, make_model

TOL = 1e-5


def snapshot(model):
    return [(n, id(m)) for n, m in model.named_modules()], {k: v.clone() for k, v in model.state_dict().items()}


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("layer", [0, 2, 4])
def test_use_and_train_match_plain_model(family, layer, tokenizer, texts):
    model = make_model(family)
    rec = Recycler(model, tokenizer, None, layer=layer)
    batch = rec.tokenize(texts)  # padded, mixed lengths
    assert (batch["attention_mask"] == 0).any()
    with torch.no_grad():
        ref = model(**batch).logits
    # use() on an empty store computes everything in-batch
    with rec.use(write_back=True), torch.no_grad():
        assert (model(**batch).logits - ref).abs().max() <= TOL
    assert len(rec.store) == len(texts)
    # train() from stored states by input_ids ...
    with rec.train(), torch.no_grad():
        assert (model(**batch).logits - ref).abs().max() <= TOL
    # ... and from the collator's inputs_embeds (the training path)
    keys = rec.fill(texts, progress=False).keys
    collated = rec.collate(rec.dataset(keys, labels=False).__getitems__(list(range(len(keys)))))
    with rec.train(), torch.no_grad():
        assert (model(**collated).logits - ref).abs().max() <= TOL


def test_use_mixes_hits_and_misses_in_one_batch(tokenizer, texts):
    model = make_model("bert")
    rec = Recycler(model, tokenizer, None, layer=2)
    rec.fill(texts[::2], progress=False)
    batch = rec.tokenize(texts)
    with torch.no_grad():
        ref = model(**batch).logits
    calls = []
    # a submodule's hook fires only when layer 0 really computes (its bypassed forward skips it)
    h = rec.parts.layers[0].attention.register_forward_hook(lambda m, a, o: calls.append(a[0].shape[0]))
    with rec.use(), torch.no_grad():
        out = model(**batch).logits
    h.remove()
    assert (out - ref).abs().max() <= TOL
    assert calls == [len(texts[1::2])]  # the bottom ran on the misses only
    assert len(rec.store) == len(texts[::2])  # no write_back


def test_half_precision_store_answers_the_same_before_and_after_storing(tokenizer, texts):
    from ember.recycle import RecycleConfig

    model = make_model("bert").eval()
    rec = Recycler(model, tokenizer, None, RecycleConfig(layer=2, dtype="float16", backend="memory"))
    batch = rec.tokenize(texts)
    with rec.use(write_back=True), torch.no_grad():
        first = model(**batch).logits  # every row a miss, computed and written back
    with rec.use(), torch.no_grad():
        again = model(**batch).logits  # every row a hit
    assert torch.equal(first, again)
    with torch.no_grad():
        assert 0 < (model(**batch).logits - first).abs().max() < 1e-2  # float16 rounding is visible, and small


def test_train_never_touches_bottom_when_all_stored(tokenizer, texts):
    model = make_model("roberta")
    rec = Recycler(model, tokenizer, None, layer=3)
    rec.fill(texts, progress=False)
    ran = []
    inner = [c for m in rec.parts.bottom(3) for c in m.children()]  # run only if a bottom module computes
    hooks = [m.register_forward_hook(lambda *a: ran.append(1)) for m in inner]
    with rec.train(), torch.no_grad():
        model(**rec.tokenize(texts))
    for h in hooks:
        h.remove()
    assert ran == []


def test_train_on_missing_examples_names_them(tokenizer, texts):
    model = make_model("bert")
    rec = Recycler(model, tokenizer, None, layer=2)
    rec.fill(texts[:2], progress=False)
    with rec.train(), pytest.raises(MissingEntriesError, match=r"6 of 8 examples in this batch are not in the store .* Fill the store"):
        model(**rec.tokenize(texts))


@pytest.mark.parametrize("mode", ["record", "train", "use"])
def test_model_restored_exactly(mode, tokenizer, texts):
    model = make_model("electra")
    before_modules, before_state = snapshot(model)
    rec = Recycler(model, tokenizer, None, layer=2)
    rec.fill(texts, progress=False)
    with pytest.raises(RuntimeError, match="boom"), getattr(rec, mode)():
        model(**rec.tokenize(texts))
        raise RuntimeError("boom")
    after_modules, after_state = snapshot(model)
    assert after_modules == before_modules
    assert all(torch.equal(before_state[k], after_state[k]) for k in before_state)
    assert not rec.parts.base._forward_pre_hooks and not rec.parts.layers[2]._forward_pre_hooks
    assert all("forward" not in m.__dict__ for m in model.modules())


def test_frozen_weights_stay_visible_inside_contexts(tmp_path, tokenizer, texts):
    """Checkpoints, dtype/device moves and optimizers made inside train() see the whole model."""
    model = make_model("bert")
    full = set(model.state_dict())
    rec = Recycler(model, tokenizer, None, layer=2)
    rec.fill(texts, progress=False)
    with rec.train():
        assert set(model.state_dict()) == full
        model.save_pretrained(tmp_path / "ckpt")
        model.double()
        assert model.bert.embeddings.word_embeddings.weight.dtype == torch.float64
        model.float()
    from transformers import BertForSequenceClassification

    again = BertForSequenceClassification.from_pretrained(tmp_path / "ckpt").eval()
    batch = rec.tokenize(texts)
    with torch.no_grad():
        assert torch.equal(again(**batch).logits, model(**batch).logits)


def test_existing_instance_forward_is_kept(tokenizer, texts):
    model = make_model("bert")
    emb = model.bert.embeddings
    calls = []
    original = emb.forward

    def wrapped(*a, **kw):  # what accelerate-style hooks do
        calls.append(1)
        return original(*a, **kw)

    emb.forward = wrapped
    rec = Recycler(model, tokenizer, None, layer=2)
    with rec.use(), torch.no_grad():
        model(**rec.tokenize(texts))
    assert emb.forward is wrapped and len(calls) == 1  # ran once, for the misses


def test_record_writes_eval_mode_states_even_while_training(tokenizer, texts):
    model = make_model("bert", hidden_dropout_prob=0.5)
    rec = Recycler(model, tokenizer, None, layer=2)
    model.train()
    with rec.record():
        model(**rec.tokenize(texts))
    model.eval()
    with torch.no_grad():
        ref = model(**rec.tokenize(texts)).logits
    with rec.train(), torch.no_grad():
        out = model(**rec.tokenize(texts)).logits
    assert len(rec.store) == len(texts)
    assert (out - ref).abs().max() <= TOL  # stored states carry no dropout noise


def test_gradients_flow_through_top_only(tokenizer, texts):
    model = make_model("distilbert")
    rec = Recycler(model, tokenizer, None, layer=2)
    rec.fill(texts, labels=[0, 1, 2, 0, 1, 2, 0, 1], progress=False)
    batch = rec.collate(rec.dataset("train").__getitems__(list(range(8))))
    model.train()
    with rec.train():
        model(**batch).loss.backward()
    bottom = {id(p) for m in rec.parts.bottom(2) for p in m.parameters()}
    for p in model.parameters():
        if id(p) in bottom:
            assert p.grad is None
        else:
            assert p.grad is not None


def test_half_precision_storage_close_and_smaller(tokenizer, texts):
    model = make_model("bert")
    batch = Recycler(model, tokenizer, None, layer=2).tokenize(texts)
    with torch.no_grad():
        ref = model(**batch).logits
    sizes = {}
    for dtype in ("float32", "float16", "bfloat16"):
        from ember.recycle import RecycleConfig

        rec = Recycler(model, tokenizer, None, RecycleConfig(layer=2, dtype=dtype))
        rec.fill(texts, progress=False)
        sizes[dtype] = sum(len(v) for v in rec.store.kv.get_many(list(rec.store.kv.keys())))
        with rec.train(), torch.no_grad():
            err = (model(**batch).logits - ref).abs().max().item()
        assert err < (1e-5 if dtype == "float32" else 5e-2)
    assert sizes["float16"] < 0.6 * sizes["float32"] and sizes["bfloat16"] < 0.6 * sizes["float32"]


def test_forwards_from_several_threads_inside_use_each_get_their_own_answer(tokenizer, texts, tmp_path):
    import concurrent.futures

    model = make_model("bert")
    rec = Recycler(model, tokenizer, tmp_path / "states", layer=2)
    rec.fill(texts[::2], progress=False)  # the rest are misses, computed (and written back) inside the forwards
    batches = [rec.tokenize([texts[i % len(texts)], texts[(i * 3 + 1) % len(texts)]]) for i in range(40)]
    with torch.no_grad():
        want = [model(**b).logits for b in batches]
    with rec.use(write_back=True), torch.no_grad(), concurrent.futures.ThreadPoolExecutor(4) as pool:
        got = list(pool.map(lambda b: model(**b).logits, batches))
    for g, w in zip(got, want, strict=True):
        assert (g - w).abs().max() <= TOL
    assert len(rec.store) == len(texts)
    with torch.no_grad():  # the context left the model as it was
        assert all(torch.equal(model(**b).logits, w) for b, w in zip(batches, want, strict=True))


def test_a_fill_on_another_thread_waits_for_the_forwards_inside_use(tokenizer, texts, tmp_path):
    import concurrent.futures

    model = make_model("bert")
    rec = Recycler(model, tokenizer, tmp_path / "states", layer=2)
    rec.fill(texts[:2], progress=False)
    batches = [rec.tokenize([texts[i % len(texts)], texts[(i + 3) % len(texts)]]) for i in range(30)]
    more = [f"{a} {b}" for a in texts for b in texts[:3]]
    with torch.no_grad():
        want = [model(**b).logits for b in batches]
        want_more = model(**rec.tokenize(more)).logits
    with rec.use(), torch.no_grad(), concurrent.futures.ThreadPoolExecutor(4) as pool:
        filled = pool.submit(rec.fill, more, progress=False)  # its bottom runs while the context bypasses it
        got = list(pool.map(lambda b: model(**b).logits, batches))
        filled.result()
    for g, w in zip(got, want, strict=True):
        assert (g - w).abs().max() <= TOL
    with rec.train(), torch.no_grad():  # what the fill stored is the bottom's true output
        assert (model(**rec.tokenize(more)).logits - want_more).abs().max() <= TOL


def test_leaving_use_while_other_threads_run_forwards_neither_hangs_nor_mixes_answers(tokenizer, texts, tmp_path):
    import queue
    import threading
    import time

    model = make_model("bert")
    rec = Recycler(model, tokenizer, tmp_path / "states", layer=2)
    rec.fill(texts[::2], progress=False)
    batches = [rec.tokenize([texts[i % len(texts)], texts[(i * 5 + 1) % len(texts)]]) for i in range(60)]
    with torch.no_grad():
        want = [model(**b).logits for b in batches]
    todo, done = queue.Queue(), {}

    def work() -> None:
        while (i := todo.get()) is not None:
            with torch.no_grad():
                done[i] = model(**batches[i]).logits

    # daemon threads: a regression that leaves them waiting on the context's lock fails the test, not the run
    workers = [threading.Thread(target=work, daemon=True) for _ in range(4)]
    with rec.use():
        for w in workers:
            w.start()
        for i in range(len(batches)):
            todo.put(i)
        while len(done) < 8:  # leave while forwards are running and others wait for their turn
            time.sleep(0.001)
    # the context is gone; forwards still queued run as the plain model, those under way finished first
    for _ in workers:
        todo.put(None)
    deadline = time.monotonic() + 60
    for w in workers:
        w.join(timeout=max(0.0, deadline - time.monotonic()))
    assert not any(w.is_alive() for w in workers)
    for i, w in enumerate(want):
        assert (done[i] - w).abs().max() <= TOL
    assert model._forward_hooks == {} and model._forward_pre_hooks == {}


@pytest.mark.parametrize("wrap", ["model", "compiled"])
def test_a_torch_compiled_model_runs_from_the_store(wrap, tokenizer, texts):
    """``torch.compile(model)`` called inside a context takes its states from the store, misses raise in
    ``train()``, and the same compiled model computes everything again once the context is left. Dynamo used
    to trace into ember's hooks and fail at the content key. The ``eager`` backend runs Dynamo's tracing,
    which is where that failed, without inductor's minute-long build."""
    torch._dynamo.reset()
    model = make_model("bert")
    compiled = torch.compile(model, backend="eager")
    batch = Recycler(model, tokenizer, None, layer=2).tokenize(texts)
    with torch.no_grad():
        ref = compiled(**batch).logits  # compiled before any context: a graph without ember's hooks
    rec = Recycler(model if wrap == "model" else compiled, tokenizer, None, layer=2)
    with rec.record(), torch.no_grad():
        assert (compiled(**batch).logits - ref).abs().max() <= TOL
    assert len(rec.store) == len(texts)
    ran = []
    h = rec.parts.layers[0].attention.register_forward_hook(lambda m, a, o: ran.append(1))
    with rec.train(), torch.no_grad():
        assert (compiled(**batch).logits - ref).abs().max() <= TOL
        assert ran == []  # the bottom did not run: the states came from the store
        with pytest.raises(MissingEntriesError):
            compiled(**rec.tokenize(["cancel reservation at restaurant"]))
    with torch.no_grad():
        assert (compiled(**batch).logits - ref).abs().max() <= TOL
    h.remove()
    assert ran  # outside the context the compiled model runs its bottom again
