"""`connector crm setup` for Salesforce: which custom field each mapped `__c` field should be.

Salesforce needs a type for a new field; the mapping only says where a value comes from. The
transforms tell us enough: `number` is a number, `budget_min` money, `date: iso` a date-time,
`truncate: 40` text of 40 characters, the upsert key an External ID. Anything else is Text(255).
The definitions are Tooling API `CustomField` metadata.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Protocol, TypeVar

from simple_salesforce import format_soql
from simple_salesforce.exceptions import SalesforceError

from connector.destinations.salesforce.settings import Settings
from connector.errors import ConfigProblem
from connector.mapping.spec import FieldSpec
from connector.records import UpdatePolicy

if TYPE_CHECKING:
    from simple_salesforce import Salesforce

    from connector.mapping import Mapping

T = TypeVar("T")


class Org(Protocol):
    """What creating fields needs of a logged-in Salesforce destination (SalesforceDestination is one):
    its settings, its cached describes, and its calls, which classify and refresh the session."""

    settings: Settings
    _describes: dict[str, dict[str, Any]]

    def describe(self, object_name: str | None = None) -> dict[str, Any]: ...
    def _call(self, action: Callable[[Salesforce], T]) -> T: ...
    def _restful(self, client: Salesforce, path: str, **kw: Any) -> Any: ...
    def _query(self, client: Salesforce, soql: str) -> list[dict[str, Any]]: ...

PERMISSION_SET = "Lead_Connector_Fields"
TEXT_MAX = 255
LONG_TEXT_MAX = 131072


def label_of(api_name: str) -> str:
    """`Lead_Score__c` -> `Lead Score` (Salesforce labels are at most 40 characters)."""
    return re.sub(r"__c$", "", api_name).replace("_", " ").strip()[:40]


def _steps(spec: FieldSpec) -> list[tuple[str, Any]]:
    return [next(iter(s.items())) if isinstance(s, dict) else (s, None) for s in spec.transforms]


def custom_field_metadata(api_name: str, spec: FieldSpec, external_id_field: str) -> dict[str, Any]:
    """Tooling API metadata for a new field that can hold what this mapping field produces."""
    meta: dict[str, Any] = {"label": label_of(api_name), "description": "Created by the lead connector"}
    steps = _steps(spec)
    names = [n for n, _a in steps]
    truncate = next((int(a) for n, a in reversed(steps) if n == "truncate"), None)
    date_format = next((str(a) for n, a in reversed(steps) if n == "date"), None)
    constants = [v for v in [spec.value, spec.default, spec.otherwise, *(spec.map or {}).values()] if v is not None]
    if api_name.lower() == external_id_field.lower():
        meta.update(type="Text", length=min(truncate or TEXT_MAX, TEXT_MAX), externalId=True, unique=True,
                    caseSensitive=False)
    elif names and names[-1] in ("budget_min", "budget_max"):
        meta.update(type="Currency", precision=16, scale=2)
    elif names and names[-1] == "number" or (constants and all(
            isinstance(v, int | float) and not isinstance(v, bool) for v in constants)):
        meta.update(type="Number", precision=16, scale=2)
    elif date_format is not None and names[-1] == "date":
        if date_format in ("epoch_ms", "date_epoch_ms"):
            meta.update(type="Number", precision=18, scale=0)
        elif date_format == "iso":
            meta.update(type="DateTime")
        elif date_format == "%Y-%m-%d":
            meta.update(type="Date")
        else:
            meta.update(type="Text", length=40)
    elif constants and all(isinstance(v, bool) for v in constants):
        meta.update(type="Checkbox", defaultValue="false")
    elif truncate is not None and truncate > TEXT_MAX:
        meta.update(type="LongTextArea", length=min(truncate, LONG_TEXT_MAX), visibleLines=3)
    else:
        meta.update(type="Text", length=min(truncate or TEXT_MAX, TEXT_MAX))
    return meta


def describe_metadata(meta: dict[str, Any]) -> str:
    """`Text(64), External ID, Unique` for the setup report."""
    kind = meta["type"]
    if "length" in meta:
        kind += f"({meta['length']})"
    elif "precision" in meta:
        kind += f"({meta['precision']}, {meta['scale']})"
    if meta.get("externalId"):
        kind += ", External ID, Unique"
    return kind


def setup_failure(exc: Any, obj: str, name: str, todo: dict[str, dict[str, Any]],
                  created: list[str]) -> ConfigProblem:
    """What to tell the admin when the Tooling API refuses to create a field: what failed, why,
    what was already done, and how to finish by hand.

    A 404 from `tooling/sobjects/CustomField` is not about any field: the org or the user has no
    Tooling API (an edition without API access, or a user without "API Enabled" / "Customize
    Application"), so the message says that rather than blaming an External ID field.
    """
    content = exc.content[0] if isinstance(exc.content, list) and exc.content and isinstance(
        exc.content[0], dict) else {}
    said = content.get("message") or f"HTTP {exc.status}"
    code = content.get("errorCode") or f"HTTP_{exc.status}"
    by_hand = "; ".join(f"{n} {describe_metadata(m)}" for n, m in todo.items())
    hand = f" To finish by hand, create in Setup > Object Manager > {obj} > Fields & Relationships: {by_hand}."
    done = f" Already created: {', '.join(created)}." if created else " Nothing was changed."
    if exc.status == 404:
        why = (f"could not create {obj}.{name}: Salesforce's Tooling API is not available to the connector's user "
               f"(HTTP 404 at tooling/sobjects/CustomField: {said}). The org's edition must allow API access, and "
               f"the user needs the permissions API Enabled, Customize Application and Modify Metadata Through "
               f"Metadata API Functions; then run `connector crm setup` again.")
    elif exc.status in (401, 403):
        why = (f"could not create {obj}.{name}: Salesforce refused the Tooling API call ([{code}] {said}). Give the "
               f"connector's user Customize Application and Modify Metadata Through Metadata API Functions, then "
               f"run `connector crm setup` again.")
    else:
        why = f"could not create {obj}.{name} ({describe_metadata(todo.get(name, {'type': '?'}))}): [{code}] {said}."
    return ConfigProblem(why + done + hand, code=code, status=exc.status, field=name)


def grant_access(call: Callable[..., Any], restful: Callable[..., Any], query: Callable[..., Any], object_name: str,
                 fields: list[str]) -> str:
    """New fields are invisible to everyone (field-level security): grant them to our own user
    through a permission set, created and assigned once."""
    found = call(lambda c: query(c, format_soql(
        "SELECT Id FROM PermissionSet WHERE Name = {}", PERMISSION_SET)))
    if found:
        permission_set = found[0]["Id"]
    else:
        permission_set = call(lambda c: restful(c, "sobjects/PermissionSet", method="POST", json={
            "Name": PERMISSION_SET, "Label": "Lead connector fields",
            "Description": "Edit access to the fields the lead connector writes"}))["id"]
    records = [{"attributes": {"type": "FieldPermissions"}, "ParentId": permission_set, "SobjectType": object_name,
                "Field": f"{object_name}.{name}", "PermissionsRead": True, "PermissionsEdit": True}
               for name in fields]
    results = call(lambda c: restful(c, "composite/sobjects", method="POST",
                                                 json={"allOrNone": False, "records": records}))
    refused = [f"{name} ({'; '.join(e.get('message', '') for e in r.get('errors') or [])})"
               for name, r in zip(fields, results or [], strict=False) if not r.get("success")]
    user = call(lambda c: c.oauth2("userinfo"))["user_id"]
    assigned = call(lambda c: query(c, format_soql(
        "SELECT Id FROM PermissionSetAssignment WHERE PermissionSetId = {} AND AssigneeId = {}",
        permission_set, user)))
    if not assigned:
        call(lambda c: restful(c, "sobjects/PermissionSetAssignment", method="POST",
                                           json={"PermissionSetId": permission_set, "AssigneeId": user}))
    granted = len(fields) - len(refused)
    line = f"gave the connector's user edit access to {granted} new field(s) via permission set {PERMISSION_SET}"
    if refused:
        line += f"; could not grant: {', '.join(refused)}"
    return line


def create_fields(dest: Org, mapping: Mapping) -> list[str]:
    """`SalesforceDestination.setup`: create each custom field the mapping writes that the object lacks
    (definitions above), then let our user edit them (grant_access). What exists is left alone."""
    s = dest.settings
    dest._describes.pop(s.object, None)
    try:
        have = {f["name"].lower() for f in dest.describe().get("fields", [])}
    except SalesforceError as exc:
        if exc.status != 404:
            raise
        raise ConfigProblem(f"Salesforce has no object '{s.object}' that this user can see (HTTP 404 on its "
                            f"describe): check `object:` in the destination's settings, and that the user's "
                            f"profile can read {s.object} records", code="NOT_FOUND", status=404) from None
    wanted = {n: spec for n, spec in mapping.fields.items() if spec.update is not UpdatePolicy.never}
    if not any(n.lower() == s.external_id_field.lower() for n in wanted):
        wanted[s.external_id_field] = FieldSpec.model_validate({"from": "id"})
    done: list[str] = []
    created: list[str] = []
    for name, spec in wanted.items():
        if name.lower() in have:
            continue
        if not name.endswith("__c"):
            done.append(f"not created {s.object}.{name}: only custom fields (ending in __c) can be created; "
                        f"is the name in {mapping.path} right?")
            continue
        meta = custom_field_metadata(name, spec, s.external_id_field)
        body = {"FullName": f"{s.object}.{name}", "Metadata": meta}
        try:
            dest._call(lambda c, body=body: c.toolingexecute("sobjects/CustomField/", method="POST",
                                                             data=body, timeout=s.timeout))
        except SalesforceError as exc:
            todo = {n: custom_field_metadata(n, f, s.external_id_field) for n, f in wanted.items()
                    if n.lower() not in have and n.endswith("__c") and n not in created}
            raise setup_failure(exc, s.object, name, todo, created) from None
        created.append(name)
        done.append(f"created {s.object}.{name} ({describe_metadata(meta)})")
    if created:
        done.append(grant_access(dest._call, dest._restful, dest._query, s.object, created))
        dest._describes.pop(s.object, None)
    return done
