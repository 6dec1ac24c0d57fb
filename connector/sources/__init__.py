"""Marketplaces: one module each. Importing this package registers them all."""

import importlib
import pkgutil

from connector.sources.base import InvalidPayload, Marketplace

for _module in pkgutil.iter_modules(__path__):
    if _module.name != "base" and not _module.name.startswith("_"):
        importlib.import_module(f"{__name__}.{_module.name}")


def marketplace_class(name: str) -> type[Marketplace]:
    return Marketplace.registry[name]


__all__ = ["InvalidPayload", "Marketplace", "marketplace_class"]
