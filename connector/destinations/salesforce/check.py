"""`mappings check --against-crm` for Salesforce: the mapping read next to the object's describe.

Everything here is what Salesforce would otherwise tell us one lead at a time, as a dead letter:
a field that does not exist or that this user cannot write, a constant outside a picklist or
longer than the field, and fields the org requires that the mapping never fills.
"""

from __future__ import annotations

from typing import Any

from connector.mapping import Mapping
from connector.mapping.spec import FieldSpec
from connector.records import UpdatePolicy
from connector.yamlfile import did_you_mean

TEXT_TYPES = {"string", "textarea", "email", "phone", "url", "encryptedstring", "picklist", "multipicklist", "combobox"}


def required_on_create(field: dict[str, Any]) -> bool:
    """What Salesforce rejects a new record without: createable, not nillable, no default."""
    return bool(field.get("createable")) and not field.get("nillable") and not field.get("defaultedOnCreate")


def constants(spec: FieldSpec) -> list[Any]:
    """Every literal value the mapping can write to this field (not the lead's own values)."""
    found: list[Any] = []
    if spec.from_ is None and spec.template is None and spec.value is not None:
        found.append(spec.value)
    if spec.map:
        found.extend(spec.map.values())
    for extra in (spec.otherwise, spec.default):
        if extra is not None:
            found.append(extra)
    return [v for v in found if v not in (None, "")]


def mapping_problems(mapping: Mapping, describe: dict[str, Any], object_name: str,
                     external_id_field: str) -> list[str]:
    where = str(mapping.path)
    fields = {f["name"].lower(): f for f in describe.get("fields", [])}
    names = [f["name"] for f in describe.get("fields", [])]
    problems: list[str] = []

    ext = fields.get(external_id_field.lower())
    if ext is None:
        problems.append(f"{where}: external_id_field {external_id_field} does not exist on {object_name}"
                        f"{did_you_mean(external_id_field, names)} (create it as a Text field with "
                        f"'External ID' and 'Unique' ticked)")
    elif not (ext.get("externalId") or ext.get("idLookup")):
        problems.append(f"{where}: external_id_field {external_id_field} on {object_name} is not marked "
                        f"External ID: tick 'External ID' (and 'Unique') on the field")

    written: set[str] = set()
    for name, spec in mapping.fields.items():
        if spec.update is UpdatePolicy.never:
            continue
        field = fields.get(name.lower())
        if field is None:
            problems.append(f"{where}: {name}: no such field on {object_name}{did_you_mean(name, names)}")
            continue
        written.add(field["name"].lower())
        problems.extend(_field_problems(where, name, spec, field, object_name))

    for field in describe.get("fields", []):
        lowered = field["name"].lower()
        if required_on_create(field) and lowered not in written and lowered != external_id_field.lower():
            problems.append(f"{where}: {field['name']}: {object_name} requires it on create but the mapping "
                            f"never fills it; add e.g. `{field['name']}: {{from: ..., default: ...}}`")
    return problems


def _field_problems(where: str, name: str, spec: FieldSpec, field: dict[str, Any], object_name: str) -> list[str]:
    out: list[str] = []
    label = f"{where}: {name}"
    if not field.get("createable"):
        out.append(f"{label}: {object_name}.{field['name']} cannot be set when a record is created (not "
                   f"createable for this user: read-only, formula or field-level security)")
    if spec.update in (UpdatePolicy.always, UpdatePolicy.if_empty) and not field.get("updateable"):
        out.append(f"{label}: {object_name}.{field['name']} cannot be updated by this user; use "
                   f"`update: on_create` or grant edit access")
    if required_on_create(field) and (spec.from_ is not None or spec.template is not None) \
            and spec.default is None and not spec.required:
        out.append(f"{label}: {object_name} requires {field['name']} but some leads may have no value for it; "
                   f"add a `default:`")
    allowed = [p["value"] for p in field.get("picklistValues") or [] if p.get("active", True)]
    length = int(field.get("length") or 0)
    for value in constants(spec):
        if field.get("type") in ("picklist", "multipicklist") and allowed:
            parts = str(value).split(";") if field.get("type") == "multipicklist" else [str(value)]
            for part in parts:
                if part not in allowed:
                    consequence = "Salesforce will reject it (restricted picklist)" if field.get(
                        "restrictedPicklist") else "Salesforce stores it, but it is not one of the picklist's values"
                    out.append(f"{label}: value '{part}' is not in the {field['name']} picklist "
                               f"({', '.join(allowed)}){did_you_mean(part, allowed)}; {consequence}")
        if field.get("type") in TEXT_TYPES and length and isinstance(value, str) and len(value) > length:
            out.append(f"{label}: value '{value[:30]}...' is {len(value)} characters; {field['name']} holds "
                       f"{length}")
    for step in spec.transforms:
        if isinstance(step, dict) and "truncate" in step and length and field.get("type") in TEXT_TYPES \
                and int(step["truncate"]) > length:
            out.append(f"{label}: truncate: {step['truncate']} is longer than {field['name']} ({length} "
                       f"characters); use truncate: {length}")
    return out
