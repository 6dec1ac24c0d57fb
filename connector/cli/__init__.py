"""`connector ...`: each module of this package adds its commands to the group in `app`.

They are imported here, by name, for that side effect: a new command module is one line below.
"""

from connector.cli import backfill, explain, mappings, marketplace, ops, privacy, reconcile, run  # noqa: F401 - registers the commands
from connector.cli.app import main

__all__ = ["main"]
