"""The README's one test command is what CI runs: a newcomer who runs it sees what CI sees."""

from __future__ import annotations

import re

from tests.conftest import ROOT


def test_the_readme_test_command_is_the_one_ci_runs():
    readme = (ROOT / "README.md").read_text()
    section = readme.split("### Tests", 1)[1]
    command = re.search(r"```sh\n(.+?)\n```", section, re.S).group(1).strip()
    ci = [line.strip() for line in (ROOT / ".ci" / "run").read_text().splitlines()
          if line.startswith("python3 -m venv")]
    assert ci == [command]
