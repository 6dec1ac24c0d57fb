"""CRMs and other places leads go: one module each. Importing this package registers them all."""

import importlib
import pkgutil

from connector.destinations.base import Destination, DestinationSettings

for _module in pkgutil.iter_modules(__path__):
    if _module.name != "base" and not _module.name.startswith("_"):
        importlib.import_module(f"{__name__}.{_module.name}")

__all__ = ["Destination", "DestinationSettings"]
