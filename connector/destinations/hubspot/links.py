"""Links to HubSpot records for people (the speed-to-lead notice): https://<ui domain>/contacts/<portal>/record/<type>/<id>.

The portal (Hub) id and the UI domain come from the settings, or else from HubSpot's account details
(GET /account-info/v3/details answers `portalId` and `uiDomain`, which is app-eu1.hubspot.com for an
account hosted in the EU: https://developers.hubspot.com/docs/api-reference/legacy/account/account-information/get-account-details),
asked once per client and only when a notice needs a link.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from urllib.parse import quote

import requests

log = logging.getLogger(__name__)
# HubSpot's object type ids in record URLs; a custom object is addressed by its own id (2-...).
OBJECT_TYPES = {"contacts": "0-1", "companies": "0-2", "deals": "0-3", "tickets": "0-5"}
RETRY_LOOKUP = 600.0  # after a failed account lookup, notices go without a link this long


class RecordLinks:
    def __init__(self, *, host: str, token: str, object_type: str, portal_id: int | None, ui_domain: str,
                 ca_bundle: str | None, timeout: float, paced: Callable[[Callable[[], requests.Response]],
                                                                       requests.Response]):
        """`paced` runs a request inside the destination's shared rate budget."""
        self.host, self.token, self.ca_bundle, self.timeout, self.paced = host.rstrip("/"), token, ca_bundle, timeout, paced
        self.object_type = OBJECT_TYPES.get(object_type, object_type)
        self._account: tuple[int, str] | None = (portal_id, ui_domain) if portal_id else None
        self._failed_at = 0.0
        self._lock = threading.Lock()

    def url(self, crm_id: str) -> str | None:
        account = self._account or self._lookup()
        if account is None:
            return None
        portal, domain = account
        return f"https://{domain}/contacts/{portal}/record/{self.object_type}/{quote(crm_id, safe='')}"

    def _lookup(self) -> tuple[int, str] | None:
        with self._lock:
            if self._account is not None or time.monotonic() - self._failed_at < RETRY_LOOKUP and self._failed_at:
                return self._account
            try:
                answer = self.paced(lambda: requests.get(
                    f"{self.host}/account-info/v3/details", headers={"Authorization": f"Bearer {self.token}"},
                    timeout=self.timeout, verify=self.ca_bundle or True))
                answer.raise_for_status()
                data = answer.json()
                self._account = (int(data["portalId"]), str(data.get("uiDomain") or "app.hubspot.com"))
            except (requests.RequestException, ValueError, KeyError, TypeError) as exc:
                self._failed_at = time.monotonic()
                log.warning("HubSpot account details unavailable (%s): notices go without a record link; set "
                            "portal_id to avoid the lookup", type(exc).__name__)
            return self._account
