"""CRMs and other places leads go. `DESTINATIONS` is the registry: a new kind is one line here.

Each line names the kind's settings class, imported here (every process checks the config against
it, with file and line), and where its implementation lives, imported the first time a destination
of that kind is built (`Runtime.destination`, in the worker and the CLI). The receiver checks the
config but never sends, so the web process does not load simple-salesforce, hubspot-api-client and
what they pull in (zeep, lxml, cryptography, ...): about 25 MiB less per gunicorn process.
"""

from __future__ import annotations

import importlib
from typing import Any

from connector.destinations import file, http
from connector.destinations.base import Destination, DestinationSettings
from connector.destinations.hubspot.settings import Settings as HubSpotSettings
from connector.destinations.salesforce.settings import Settings as SalesforceSettings


class Kind:
    """One `type:` of destination: its settings now, its implementation (`module:Class`) when first used."""

    def __init__(self, kind: str, settings: type[DestinationSettings], implementation: str):
        self.kind = kind
        self.Settings = settings
        self.implementation = implementation
        self._class: type[Destination] | None = None

    def load(self) -> type[Destination]:
        if self._class is None:
            module, name = self.implementation.split(":")
            cls = getattr(importlib.import_module(module), name)
            if cls.kind != self.kind or cls.Settings is not self.Settings:
                raise TypeError(f"{self.implementation} is not the '{self.kind}' destination registered here")
            self._class = cls
        return self._class

    @property
    def max_batch(self) -> int:
        return self.load().max_batch

    @property
    def paced(self) -> bool:
        return self.load().paced

    def __call__(self, name: str, settings: Any, **options: Any) -> Destination:
        return self.load()(name, settings, **options)


# The `type:` value in config -> the kind that delivers there.
DESTINATIONS: dict[str, Kind] = {kind.kind: kind for kind in (
    Kind("file", file.Settings, "connector.destinations.file:FileDestination"),
    Kind("http", http.Settings, "connector.destinations.http:HttpDestination"),
    Kind("hubspot", HubSpotSettings, "connector.destinations.hubspot.destination:HubSpotDestination"),
    Kind("salesforce", SalesforceSettings, "connector.destinations.salesforce.destination:SalesforceDestination"),
)}

__all__ = ["DESTINATIONS", "Destination", "DestinationSettings", "Kind"]
