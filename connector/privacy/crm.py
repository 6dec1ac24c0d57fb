"""`connector forget --crm`: asking each destination, and LeadOS, to erase the person too.

Per destination, by its type and `privacy.erase.<name>` (default: delete where the CRM can):
- hubspot: the GDPR delete (`POST /crm/v3/objects/contacts/gdpr-delete`, hubspot-api-client's
  `crm.contacts.basic_api.purge`), by each email of the person (HubSpot also blocklists an email
  it has no contact for) and by each contact id we delivered to;
- salesforce: DELETE of each Lead we delivered to, or `action: anonymise` overwrites `fields`;
- http: the configured call (`url` with {crm_id}, {lead_key}, {lead_id}) per lead we delivered;
- file: nothing the connector can do (the file is the buyer's): reported as manual.
Sources that are LeadOS with an API key get the emails on their suppression list (`POST /v1/suppression`).

A failure is one line of the report (redacted: no email, phone or secret), never an exception.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import requests

from connector.privacy.settings import CrmErasure
from connector.runtime import Runtime
from connector.store.erasure import Found, Target


@dataclass
class CrmResult:
    place: str  # "destination <name>" or "source <name>"
    status: str  # "erased", "nothing to erase", "manual", "skipped", "failed"
    detail: str

    @property
    def failed(self) -> bool:
        return self.status == "failed"


def erase_in_crms(runtime: Runtime, found: Found) -> list[CrmResult]:
    results = []
    by_destination: dict[str, list[Target]] = {}
    for target in found.targets:
        by_destination.setdefault(target.destination, []).append(target)
    for name, dest in runtime.config.destinations.items():
        rule = runtime.config.privacy.erase.get(name, CrmErasure())
        targets = by_destination.get(name, [])
        place = f"destination {name}"
        if rule.action == "none":
            results.append(CrmResult(place, "skipped", "privacy.erase says action: none"))
            continue
        eraser = ERASERS.get(dest.type)
        if eraser is None:
            results.append(CrmResult(place, "manual", f"a {dest.type} destination cannot be erased by the "
                                                      f"connector: remove lead keys "
                                                      f"{', '.join(t.lead_key for t in targets) or '(none)'} by hand"))
            continue
        try:
            results.append(CrmResult(place, *eraser(runtime, name, rule, targets, found)))
        except Exception as exc:  # one destination's failure is reported, the others go on
            results.append(CrmResult(place, "failed", runtime.redactor(f"{type(exc).__name__}: {exc}")[:500]))
    for name, src in runtime.config.sources.items():
        if src.marketplace != "leados":
            continue
        place = f"source {name}"
        if not found.person.emails:
            results.append(CrmResult(place, "nothing to erase", "no email known to add to LeadOS's suppression list"))
            continue
        try:
            api = runtime.marketplaces[name].api()
            try:
                api.suppress(sorted(found.person.emails))
            finally:
                api.close()
            results.append(CrmResult(place, "erased", f"{len(found.person.emails)} email(s) added to LeadOS's "
                                                      "suppression list"))
        except Exception as exc:
            results.append(CrmResult(place, "failed", runtime.redactor(f"{type(exc).__name__}: {exc}")[:500]))
    return results


def _hubspot(runtime: Runtime, name: str, rule: CrmErasure, targets: list[Target], found: Found) -> tuple[str, str]:
    from hubspot import HubSpot
    from hubspot.crm.contacts import ApiException, PublicGdprDeleteInput

    settings = runtime.destination(name).settings
    client = HubSpot(access_token=settings.access_token.get_secret_value().strip(), host=settings.host.rstrip("/"),
                     ssl_ca_cert=settings.ca_bundle, client_side_validation=True)
    api = client.crm.contacts.basic_api
    inputs = [PublicGdprDeleteInput(object_id=email, id_property="email") for email in sorted(found.person.emails)]
    inputs += [PublicGdprDeleteInput(object_id=t.crm_id) for t in targets if t.crm_id]
    if not inputs:
        return "nothing to erase", "no email or HubSpot contact id known for this person"
    gone = 0
    for item in inputs:
        try:
            api.purge(public_gdpr_delete_input=item, _request_timeout=settings.timeout)
        except ApiException as exc:
            if exc.status == 404:  # already deleted (by the email before it, say)
                continue
            raise RuntimeError(f"HubSpot answered {exc.status}: {_words(exc.body)}") from None
        gone += 1
    return "erased", f"{gone} GDPR delete(s) accepted (by email and by contact id)"


def _salesforce(runtime: Runtime, name: str, rule: CrmErasure, targets: list[Target],
                found: Found) -> tuple[str, str]:
    from simple_salesforce.exceptions import SalesforceResourceNotFound

    from connector.destinations.salesforce.auth import http_session, login

    ids = sorted({t.crm_id for t in targets if t.crm_id})
    if not ids:
        return "nothing to erase", "no Salesforce record id stored for this person's leads (never delivered?)"
    settings = runtime.destination(name).settings
    sf = login(settings, http_session(settings))
    sobject = getattr(sf, settings.object)
    done, missing = 0, 0
    for crm_id in ids:
        try:
            if rule.action == "anonymise":
                sobject.update(crm_id, rule.fields)
            else:
                sobject.delete(crm_id)
            done += 1
        except SalesforceResourceNotFound:
            missing += 1
    verb = "anonymised" if rule.action == "anonymise" else "deleted"
    return "erased", f"{done} record(s) {verb}" + (f", {missing} already gone" if missing else "")


def _http(runtime: Runtime, name: str, rule: CrmErasure, targets: list[Target], found: Found) -> tuple[str, str]:
    if not rule.url:
        return "skipped", f"no erasure call configured: set privacy.erase.{name}.url (and method)"
    if not targets:
        return "nothing to erase", "none of this person's leads went to this destination"
    settings = runtime.destination(name).settings
    headers = {k: v.get_secret_value() for k, v in rule.headers.items()}
    done = 0
    with requests.Session() as session:
        session.verify = settings.ca_bundle or True
        for target in targets:
            url = rule.url.format(crm_id=target.crm_id or "", lead_key=target.lead_key, lead_id=target.lead_id or "")
            answer = session.request(rule.method, url, headers=headers, timeout=getattr(settings, "timeout", 10.0))
            if answer.status_code == 404:
                continue
            if not 200 <= answer.status_code < 300:
                raise RuntimeError(f"{rule.method} for lead {target.lead_key} answered HTTP {answer.status_code}: "
                                   f"{answer.text[:200]}")
            done += 1
    return "erased", f"{done} {rule.method} call(s) accepted"


def _words(body: Any) -> str:
    try:
        data = json.loads(body) if isinstance(body, str | bytes) else {}
    except ValueError:
        return str(body)[:200]
    return str(data.get("message") or data)[:200] if isinstance(data, dict) else str(data)[:200]


ERASERS: dict[str, Callable[[Runtime, str, CrmErasure, list[Target], Found], tuple[str, str]]] = {
    "hubspot": _hubspot, "salesforce": _salesforce, "http": _http}
