"""The generated reference pages (docs/commands.md, docs/settings.md) match the code that defines them."""

from __future__ import annotations

import subprocess
import sys

from tests.conftest import ROOT


def test_generated_reference_pages_are_current():
    run = subprocess.run([sys.executable, str(ROOT / "tools" / "docgen.py"), "--check"], capture_output=True,
                         text=True, timeout=60)
    assert run.returncode == 0, run.stderr
