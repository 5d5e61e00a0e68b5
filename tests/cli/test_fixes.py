"""Errors carry their ways out as data (ember.fixes): the command line words them from the error's own list,
never by searching the text of a message."""

from __future__ import annotations

import pickle

from ember import fixes
from ember.cli import cache as cache_cli
from ember.cli import optimize as optimize_cli
from ember.cli import recycle as recycle_cli
from ember.cli.common import DATA_SWITCHES, cli_wording
from ember.data.texts import check_texts
from ember.errors import DataError, Fix


def all_fixes() -> list[Fix]:
    return [v for v in vars(fixes).values() if isinstance(v, Fix)]


def test_every_fix_has_a_name_and_command_line_words():
    tables = [recycle_cli.FILL_SWITCHES, recycle_cli.EVAL_SWITCHES, cache_cli.FILL_SWITCHES, optimize_cli.SWITCHES]
    worded = {f for table in tables for f in table}
    for fix in all_fixes():
        assert fix.name, fix
        assert fix in worded, f"no command words {fix!r} ({fix.name})"
        assert all(isinstance(k, Fix) for table in tables for k in table)


def test_an_error_is_worded_by_its_fixes_not_by_its_text():
    listed = DataError(f"{fixes.SPLIT_NAME}.", fixes=[fixes.SPLIT_NAME])
    unlisted = DataError(f"{fixes.SPLIT_NAME}.")  # the same words, not given as a way out
    assert cli_wording(listed, DATA_SWITCHES) == "Pass --split NAME."
    assert cli_wording(unlisted, DATA_SWITCHES) == "Pass split='NAME'."
    assert cli_wording(OSError("Pass split='NAME'"), DATA_SWITCHES) == "Pass split='NAME'"


def test_a_raised_error_lists_the_fix_its_message_names_and_survives_pickling():
    try:
        check_texts(["a", " "])
    except DataError as exc:
        assert exc.fixes == (fixes.ALLOW_EMPTY,)
        back = pickle.loads(pickle.dumps(exc))
        assert str(back) == str(exc)
    else:
        raise AssertionError("an empty text was accepted")
