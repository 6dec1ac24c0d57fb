"""`connector ...`: each module of this package adds its commands to the group in `app`."""

import importlib
import pkgutil

from connector.cli.app import main

for _module in pkgutil.iter_modules(__path__):
    if _module.name != "app":
        importlib.import_module(f"{__name__}.{_module.name}")

__all__ = ["main"]
