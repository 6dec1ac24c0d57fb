import os

# pytest-xdist's workers inherit COLUMNS=80, and rich fixes a console's width from COLUMNS when the console
# is built (when connector.cli is imported), which would cut the CLI's tables whatever width a test's
# CliRunner asks for. This package is imported before conftest.py and any test module.
os.environ.pop("COLUMNS", None)
