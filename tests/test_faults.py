"""A reduced fault campaign (benchmarks/faults.py) on a tiny model: nothing lost, nothing silent, no crash."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import TEXTS, WORDS, make_model

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "faults.py"


@pytest.fixture
def tiny(tmp_path, tokenizer):
    model = tmp_path / "model"
    make_model("bert-base").save_pretrained(model)
    tokenizer.save_pretrained(model)
    rows = sorted({f"{a} {b} {c}" for a in WORDS[:12] for b in WORDS[12:24] for c in TEXTS})[:200]
    (tmp_path / "d.csv").write_text("text\n" + "\n".join(rows) + "\n")
    return tmp_path


def campaign(tiny: Path, *args: str) -> dict:
    cmd = [sys.executable, str(SCRIPT), "--model", str(tiny / "model"), "--data", str(tiny / "d.csv"), "--layer", "2",
           "--work", str(tiny), *args]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=1200)
    assert r.returncode == 0, r.stderr[-3000:]
    return json.loads(r.stdout.strip().splitlines()[-1])


def test_kill_and_damage_quick(tiny):
    out = campaign(tiny, "--examples", "160", "--trials", "1", "--batch-sizes", "8", "--parts", "kill,damage",
                   "--flips", "1", "--zero-pages", "1", "--truncations", "half")
    assert (out["kill_trials"], out["entries_lost"], out["entries_corrupt"], out["reopen_failures"]) == (1, 0, 0, 0)
    assert out["kill"]["resume_failures"] == 0 and out["kill"]["partial_batches"] == 0
    damage = out["damage"]
    assert damage["cases"] >= 3 and (damage["crashes"], damage["silent"], damage["unclear"]) == (0, 0, 0), damage["detail"]
    assert damage["verify_missed"] == 0 and damage["outcomes"].get("clear_error", 0) >= 2  # the cut, a zeroed page


@pytest.mark.slow
def test_concurrent_readers_writers_and_a_full_disk(tiny):
    out = campaign(tiny, "--examples", "200", "--batch-sizes", "4", "--parts", "concurrent,full_disk", "--readers", "2")
    c = out["concurrent"]
    assert c["wrong_reads"] == 0 and c["reader_errors"] == 0 and c["writer_ok"] and c["second_writer"]["clear_error"]
    full = out["full_disk"]
    if "skipped" not in full:
        assert full["clear_full_error"] and full["corrupt_before_resume"] == 0 and full["resume_ok"]
