"""What every benchmark script reads and says it read (ember.bench.rows)."""

from __future__ import annotations

import argparse
import json

import pytest

from ember.bench.rows import RowsUsed, announce, choose, data_options, load_rows
from ember.data import Examples


@pytest.fixture
def clinc(tmp_path):
    path = tmp_path / "data_full.json"
    path.write_text(json.dumps({"train": [[f"train {i}", f"l{i % 3}"] for i in range(10)],
                                "test": [[f"test {i}", f"l{i % 3}"] for i in range(4)]}))
    return path


def parse(default, *argv):
    ap = argparse.ArgumentParser()
    data_options(ap, data=default, split="test")
    return ap.parse_args(list(argv))


def test_the_default_data_is_read_at_the_script_s_default_split(clinc):
    ex, used = load_rows(parse(clinc), "timed", default_split="test")
    assert ex.texts == [f"test {i}" for i in range(4)]
    assert used == RowsUsed("timed", str(clinc), "test", 4, 4, "all")
    assert used.line() == f"timed: 4 of 4 rows of {clinc}, split test (all)"
    ex, used = load_rows(parse(clinc, "--split", "train"), "train", split="train", limit=3, pick="random")
    assert len(ex) == 3 and used.how == "seeded random 3 (seed 0)" and used.of == 10 and used.split == "train"


def test_a_file_the_user_names_is_read_whole_and_said_so(tmp_path, clinc, capsys):
    csv = tmp_path / "rows.csv"
    csv.write_text("body,category\n" + "".join(f"text {i},c{i % 2}\n" for i in range(6)))
    args = parse(clinc, "--data", str(csv), "--text-column", "body", "--label-column", "category")
    ex, used = load_rows(args, "timed", default_split="test", limit=4, pick="spread")
    assert ex.texts == ["text 0", "text 1", "text 2", "text 3"] and ex.labels == ["c0", "c1", "c0", "c1"]
    assert used.split is None and used.how == "even spread of 4"
    rows = announce(used)
    assert capsys.readouterr().out == f"timed: 4 of 6 rows of {csv}, the whole file (no splits) (even spread of 4)\n"
    assert rows == {"timed": used.to_dict()}


def test_choose_keeps_file_order():
    ex = Examples([str(i) for i in range(10)], list(range(10)))
    picked, how = choose(ex, 4, "random", seed=1)
    assert picked.texts == sorted(picked.texts, key=int) and picked.labels == [int(t) for t in picked.texts]
    assert choose(ex, None)[1] == "all" and choose(ex, 2)[0].texts == ["0", "1"]
