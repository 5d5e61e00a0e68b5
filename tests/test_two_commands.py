"""README's two commands: the test command works right after the first, and .ci/run runs exactly it."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_ci_runs_exactly_the_readme_test_command():
    readme = ROOT.joinpath("README.md").read_text()
    section = readme[readme.index("## Two commands") :].split("\n## ", 1)[0]
    install, test = re.findall(r"```bash\n(.+?)\n```", section)
    assert install.startswith('pip install "torch==2.13.0"') and "ember bench" in install
    assert test == 'pip install -e ".[dev]" && python -m pytest -q'  # pytest comes with .[dev], not with .[all]
    ci = [line for line in ROOT.joinpath(".ci", "run").read_text().splitlines() if line and not line.startswith("#")]
    assert ci[-1] == test
