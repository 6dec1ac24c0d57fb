"""HubSpot: each lead becomes (or updates) one contact, up to 100 per call, within HubSpot's limits.

Leads are upserted with `POST /crm/v3/objects/{object}/batch/upsert` by a unique property
(`id_property`: our own `leaditio_lead_id`, created with unique values by `connector crm setup`, or
`email`), so a retried batch never makes a second contact. Every input carries
`objectWriteTraceId` = its delivery id: HubSpot's per-record errors (207) name it, and only those
records fail. HubSpot does not echo the trace id on a successful result and returns results in any
order (HubSpot/hubspot-api-nodejs#190), so every input also carries the id property in its
`properties`, even on updates whose mapping writes it `on_create`: a result is matched to its
input by that value alone. A 200 means every input was written: each record of it is settled at
once (with its contact id where the result names it), so nothing HubSpot accepted is sent again.
A whole batch refused for one bad input (400/409) is split: the inputs HubSpot's message points
at fail, the rest go again in the same `send()`.

Pacing: one request budget per access token, kept in the database and shared by every thread and
process delivering with the token (`connector.pacing`), sized by `requests_per_10s` until HubSpot's
`X-HubSpot-RateLimit-Max` says otherwise, fed by `X-HubSpot-RateLimit-Remaining`. A full budget
raises `Paced` before anything is sent (the worker rests and gives the leads back untouched); a 429
holds every process for HubSpot's wait and the worker reschedules the batch; the daily limit pauses
the destination until midnight in the account's time zone without failing a lead. urllib3's own
retries never retry a POST on a status, so we classify here.

`HubSpotDestination` and `hubspot_value` are imported from here on first use only (PEP 562): the
settings are needed by every process, the sending code only where leads are sent (connector.destinations).
"""

from typing import Any

from connector.destinations.hubspot.settings import Settings


def __getattr__(name: str) -> Any:
    if name in ("HubSpotDestination", "hubspot_value"):
        from connector.destinations.hubspot import destination
        return getattr(destination, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = ["HubSpotDestination", "Settings", "hubspot_value"]
