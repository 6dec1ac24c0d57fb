"""CRMs and other places leads go. `DESTINATIONS` is the registry: a new kind is one line here."""

from connector.destinations.base import Destination, DestinationSettings
from connector.destinations.file import FileDestination
from connector.destinations.http import HttpDestination
from connector.destinations.hubspot import HubSpotDestination
from connector.destinations.salesforce import SalesforceDestination

# The `type:` value in config -> the class that delivers there.
DESTINATIONS: dict[str, type[Destination]] = {
    cls.kind: cls for cls in (FileDestination, HttpDestination, HubSpotDestination, SalesforceDestination)
}

__all__ = ["DESTINATIONS", "Destination", "DestinationSettings"]
