"""What a mapping needs from HubSpot's properties: the ones to create, and the ones that will not fit.

`connector crm setup` creates what is missing (a property group, custom properties with a type
inferred from the mapping, enumeration options for mapped values, the unique id property);
`connector mappings check --against-crm` reports fields HubSpot would refuse before a lead does.
Both read the account's properties once (`GET /crm/v3/properties/{object}`).
"""

from __future__ import annotations

import difflib
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from connector.mapping import Mapping
from connector.mapping.spec import FieldSpec
from connector.records import UpdatePolicy
from connector.yamlfile import did_you_mean

NUMBER_TRANSFORMS = {"number", "budget_min", "budget_max"}


@dataclass
class PropertySpec:
    """A custom property to create: HubSpot's `type`/`fieldType` and, for enumerations, options."""

    name: str
    label: str
    type: str  # string, number, datetime, date, enumeration, bool
    field_type: str  # text, number, date, select, booleancheckbox
    options: list[str] = field(default_factory=list)
    unique: bool = False

    def describe(self) -> str:
        extra = ""
        if self.unique:
            extra = ", unique values"
        if self.options:
            extra = f", options: {', '.join(self.options)}"
        return f"{self.type} property '{self.name}' ({self.label}{extra})"


def label_for(name: str) -> str:
    """`leaditio_budget_min` -> `Leaditio budget min`: what the CRM admin sees in HubSpot."""
    text = name.replace("_", " ").strip()
    return text[:1].upper() + text[1:] if text else name


def close_names(name: str, names: list[str]) -> list[str]:
    """Existing names a new one is probably a typo of (so setup does not create `firstnme`)."""
    return difflib.get_close_matches(name, names, n=1, cutoff=0.8)


def option_label(value: str) -> str:
    return value.replace("_", " ").strip().title() or value


def enum_candidates(spec: FieldSpec) -> Iterator[tuple[str, Any]]:
    """Every value a field can take that the mapping itself spells out, with where it comes from."""
    if spec.value is not None:
        yield "value", spec.value
    for key, mapped in (spec.map or {}).items():
        yield f"map value for '{key}'", mapped
    if spec.otherwise is not None:
        yield "otherwise", spec.otherwise
    if spec.default is not None:
        yield "default", spec.default


def _transform_names(spec: FieldSpec) -> list[tuple[str, Any]]:
    steps = []
    for step in spec.transforms:
        steps.append(next(iter(step.items())) if isinstance(step, dict) else (step, None))
    return steps


def infer_property(name: str, spec: FieldSpec, *, id_property: str) -> PropertySpec:
    """The property a field needs, judged from the mapping: map -> enumeration, number -> number, ..."""
    label = label_for(name)
    if name == id_property:
        return PropertySpec(name, label, "string", "text", unique=True)
    if spec.map is not None:
        options: list[str] = []
        for _, value in enum_candidates(spec):
            if value is not None and str(value) not in options and not isinstance(value, bool):
                options.append(str(value))
        return PropertySpec(name, label, "enumeration", "select", options=options)
    steps = _transform_names(spec)
    last = steps[-1] if steps else (None, None)
    if last[0] in NUMBER_TRANSFORMS or (spec.value is not None and isinstance(spec.value, int | float)
                                        and not isinstance(spec.value, bool)):
        return PropertySpec(name, label, "number", "number")
    if isinstance(spec.value, bool):
        return PropertySpec(name, label, "bool", "booleancheckbox", options=["true", "false"])
    if last[0] == "date":
        if last[1] in ("epoch_ms", "iso"):
            return PropertySpec(name, label, "datetime", "date")
        if last[1] == "date_epoch_ms":
            return PropertySpec(name, label, "date", "date")
    return PropertySpec(name, label, "string", "text")


def sent_fields(mapping: Mapping) -> Iterator[tuple[str, FieldSpec]]:
    """The fields that reach HubSpot (`update: never` ones stay with us)."""
    for name, spec in mapping.fields.items():
        if spec.update is not UpdatePolicy.never:
            yield name, spec


def _get(prop: Any, attr: str, key: str, default: Any = None) -> Any:
    """Read an SDK `ModelProperty` or a plain dict alike."""
    if isinstance(prop, dict):
        return prop.get(key, default)
    return getattr(prop, attr, default)


def option_values(prop: Any) -> list[str]:
    return [str(_get(o, "value", "value")) for o in (_get(prop, "options", "options") or [])]


def option_labels(prop: Any) -> dict[str, str]:
    return {str(_get(o, "label", "label")).lower(): str(_get(o, "value", "value"))
            for o in (_get(prop, "options", "options") or [])}


def is_read_only(prop: Any) -> bool:
    meta = _get(prop, "modification_metadata", "modificationMetadata")
    read_only = bool(meta and _get(meta, "read_only_value", "readOnlyValue"))
    return read_only or bool(_get(prop, "calculated", "calculated"))


def is_unique(prop: Any) -> bool:
    return bool(_get(prop, "has_unique_value", "hasUniqueValue"))


def check_mapping(mapping: Mapping, properties: dict[str, Any], *, object_type: str, id_property: str,
                  setup_hint: str) -> list[str]:
    """Every way HubSpot would refuse this mapping, one readable line each (file and field named)."""
    where = str(mapping.path)
    problems: list[str] = []
    if id_property not in mapping.fields:
        problems.append(f"{where}: no field '{id_property}': HubSpot {object_type} are matched on it "
                        f"(id_property), so every lead needs a value for it")
    for name, spec in sent_fields(mapping):
        prefix = f"{where}: field {name}"
        prop = properties.get(name)
        if prop is None:
            hint = did_you_mean(name, properties)
            ours = [n for n, p in properties.items() if _get(p, "hubspot_defined", "hubspotDefined")]
            if not hint:
                fix = f" ({setup_hint} creates it)"
            elif hint == did_you_mean(name, ours):
                fix = hint  # a typo of one of HubSpot's own properties
            else:
                fix = f"{hint} (if not, {setup_hint} creates it)"
            problems.append(f"{prefix}: HubSpot {object_type} have no property '{name}'{fix}")
            continue
        if is_read_only(prop):
            problems.append(f"{prefix}: property '{name}' is read-only in HubSpot (HubSpot sets it); "
                            f"remove the field or give it `update: never`")
            continue
        if name == id_property and name != "email" and not is_unique(prop):
            problems.append(f"{prefix}: property '{name}' does not require unique values, so HubSpot cannot "
                            f"match contacts on it: use a property created with unique values, or email")
        kind = _get(prop, "type", "type")
        if kind == "enumeration":
            problems += _check_options(prefix, name, spec, prop)
        elif kind == "number":
            for origin, value in enum_candidates(spec):
                if not _numeric(value):
                    problems.append(f"{prefix}: {origin} '{value}' is not a number, but '{name}' is a number "
                                    f"property")
    return problems


def _check_options(prefix: str, name: str, spec: FieldSpec, prop: Any) -> list[str]:
    options = option_values(prop)
    by_label = option_labels(prop)
    problems = []
    for origin, value in enum_candidates(spec):
        for part in str(value).split(";") if value is not None else []:
            if part in options:
                continue
            if part.lower() in by_label:
                hint = f": write its value '{by_label[part.lower()]}' (HubSpot takes the internal value, " \
                       f"not the label)"
            else:
                hint = did_you_mean(part, options)
            shown = ", ".join(options[:12]) + (", ..." if len(options) > 12 else "")
            problems.append(f"{prefix}: {origin} '{part}' is not an option of '{name}' (options: {shown}){hint}")
    if spec.from_ is not None and spec.map is None and spec.otherwise is None and spec.value is None:
        problems.append(f"{prefix}: reads lead field '{spec.from_}' straight into enumeration property "
                        f"'{name}'; a lead value outside its options will be refused: add a `map` "
                        f"(and `otherwise`)")
    return problems


def _numeric(value: Any) -> bool:
    if isinstance(value, bool):
        return False
    if isinstance(value, int | float):
        return True
    try:
        float(str(value))
    except ValueError:
        return False
    return True
