"""``ember predict`` and the ``--ray`` flag of the commands that fill: what a user types, what they get."""

from __future__ import annotations

import json
import socket

import pytest
import torch
from typer.testing import CliRunner

from ember.cli import app

from conftest import make_model
from raytest import ray_cluster, same_store, sentences  # noqa: F401

pytestmark = pytest.mark.filterwarnings("ignore")


@pytest.fixture
def data_file(tmp_path):
    texts = sentences(40, seed=7)
    path = tmp_path / "data.csv"
    path.write_text("text,label\n" + "\n".join(f"{t},{'xyz'[i % 3]}" for i, t in enumerate(texts)) + "\n")
    return path, texts


@pytest.fixture
def classifier_dir(tokenizer, tmp_path):
    model = make_model("bert")
    model.config.id2label = {0: "x", 1: "y", 2: "z"}
    model.config.label2id = {"x": 0, "y": 1, "z": 2}
    model.save_pretrained(tmp_path / "clf")
    tokenizer.save_pretrained(tmp_path / "clf")
    return tmp_path / "clf"


def _last_json(output: str) -> dict:
    return json.loads(output.strip().splitlines()[-1])


def test_predict_scores_a_file_with_a_model_folder(classifier_dir, data_file, tmp_path):
    pq = pytest.importorskip("pyarrow.parquet")
    data, texts = data_file
    out = tmp_path / "scores.parquet"
    r = CliRunner().invoke(app, ["predict", str(classifier_dir), "--data", str(data), "--out", str(out), "--json"])
    assert r.exit_code == 0, r.output
    result = _last_json(r.stdout)
    assert (result["command"], result["examples"], result["kind"], result["dim"], result["ray"]) == ("predict", 40, "logits", 3, None)
    table = pq.read_table(out)
    assert table.column_names == ["id", "text", "label", "logits", "prediction"]
    assert table.column("text").to_pylist() == texts and table.column("id").to_pylist() == list(range(40))
    assert set(table.column("prediction").to_pylist()) <= {"x", "y", "z"}
    assert "scored 40 examples (logits, 3 values each)" in " ".join(r.stderr.split())


def test_predict_refuses_bad_options_with_the_flag_to_fix(classifier_dir, data_file, tmp_path):
    data, _ = data_file
    base = ["predict", str(classifier_dir), "--data", str(data)]
    runner = CliRunner()
    r = runner.invoke(app, [*base, "--out", str(tmp_path / "s.csv")])
    assert r.exit_code == 2 and "must end in .parquet or .jsonl" in r.output
    r = runner.invoke(app, [*base, "--out", str(tmp_path / "s.jsonl"), "--workers", "3"])
    assert r.exit_code == 2 and "--workers 3 needs --ray" in " ".join(r.output.split())
    r = runner.invoke(app, [*base, "--out", str(tmp_path / "s.jsonl"), "--task", "regression"])
    assert r.exit_code == 2 and "--task 'regression' is not one of embedding, classification" in " ".join(r.output.split())


def test_an_address_where_nothing_listens_exits_at_once_with_the_fix(classifier_dir, data_file, tmp_path):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    data, _ = data_file
    r = CliRunner().invoke(app, ["predict", str(classifier_dir), "--data", str(data), "--out", str(tmp_path / "s.jsonl"),
                                 "--ray", f"127.0.0.1:{port}"])
    assert r.exit_code == 2
    text = " ".join(r.output.split())
    assert f"no Ray cluster answered at 127.0.0.1:{port}" in text and "`ray start --head`" in text
    assert not (tmp_path / "s.jsonl").exists()


@pytest.mark.slow
@pytest.mark.usefixtures("ray_cluster")
def test_recycle_fill_and_cache_fill_with_ray_store_what_they_store_without(tokenizer, data_file, tmp_path):
    from ember.store import ActivationStore

    data, _ = data_file
    model_dir = tmp_path / "enc"
    make_model("bert-base").save_pretrained(model_dir)
    tokenizer.save_pretrained(model_dir)
    runner = CliRunner()
    for command, where in (("recycle", "--store"), ("cache", "--save-dir")):
        for run in ("local", "ray"):
            extra = ["--ray", "local", "--workers", "2"] if run == "ray" else []
            r = runner.invoke(app, [command, "fill", "--data", str(data), "--model", str(model_dir), where,
                                    str(tmp_path / command / run), *extra, *(["--json"] if command == "recycle" else [])])
            assert r.exit_code == 0, r.output
            assert _last_json(r.stdout)["examples"] == 40
        sub = "" if command == "recycle" else "text"
        with ActivationStore.open(tmp_path / command / "local" / sub, None, readonly=True) as a, \
                ActivationStore.open(tmp_path / command / "ray" / sub, None, readonly=True) as b:
            same_store(a, b)


def test_the_command_line_words_replace_phrases_that_the_library_still_says(monkeypatch):
    """Each Python phrase the commands reword must still occur in a library message (else the rewording is dead)."""
    import sys

    import ray.exceptions as rex

    from ember.cli.predict import PREDICT_SWITCHES
    from ember.cli.ray_options import RAY_SWITCHES
    from ember.scale import RayConfig
    from ember.scale.cluster import import_ray
    from ember.scale.executor import _errors_as_ember
    from ember.scale.predict import Predictions, as_scorer
    from ember.scale.transport import check_environment, environment

    messages = []
    for exc in (rex.ActorDiedError(), rex.GetTimeoutError("timed out")):
        with pytest.raises(Exception) as caught, _errors_as_ember(RayConfig()):
            raise exc
        messages.append(str(caught.value))
    with pytest.raises(Exception) as caught:
        check_environment(dict(environment(), torch="0"), environment())
    messages.append(str(caught.value))
    with pytest.raises(Exception) as caught:
        Predictions([], [], None, torch.empty(0, 0), "embedding").write("x.csv")
    messages.append(str(caught.value))
    with pytest.raises(TypeError) as caught:
        as_scorer(make_model("bert-base"))
    messages.append(str(caught.value))
    monkeypatch.setitem(sys.modules, "ray", None)
    with pytest.raises(Exception) as caught:
        import_ray()
    messages.append(str(caught.value))
    ours = {k for k in PREDICT_SWITCHES if k not in ("max_length=", "Pass split='NAME'")} | set(RAY_SWITCHES)
    from ember.cli.common import DATA_SWITCHES, MAX_LENGTH_SWITCHES, MODEL_SWITCHES

    ours -= set(DATA_SWITCHES) | set(MAX_LENGTH_SWITCHES) | set(MODEL_SWITCHES)  # checked in tests/cli
    for phrase in ours:
        assert any(phrase in m for m in messages), phrase
