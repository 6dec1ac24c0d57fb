"""The mapping file format: pydantic models that validate it and export its JSON Schema.

The schema (`mappings/mapping.schema.json`, written by `connector mappings schema`) gives editors
autocomplete and hover help; the same models produce the file:line messages a CRM admin reads.
"""

from __future__ import annotations

import re
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from connector.lead import CORE_LEAD_FIELDS, PIPELINE_FIELDS
from connector.mapping.transforms import TRANSFORMS
from connector.records import UpdatePolicy
from connector.sources import MARKETPLACES
from connector.yamlfile import did_you_mean

PLACEHOLDER = re.compile(r"\{([A-Za-z0-9_.]+)\}")
# strftime directives Python documents (C89 and the ISO 8601 ones), with glibc's `-` (no padding) flag.
_DIRECTIVE = re.compile(r"%-?[aAwdbBmyYHIpMSfzZjUWcxXGuV%]")
_NAMED_DATE_FORMATS = ("iso", "epoch_ms", "date_epoch_ms")


def check_date_format(fmt: str) -> None:
    """glibc's strftime copies an unknown directive (`%Q`) or a lone `%` through unchanged, so a typo
    would reach the CRM as text: refuse it here instead."""
    if fmt in _NAMED_DATE_FORMATS:
        return
    leftover = _DIRECTIVE.sub("", fmt)
    if "%" in leftover:
        bad = leftover[leftover.index("%"):][:2]
        raise ValueError(f"date format '{fmt}' has '{bad}', which is not a strftime directive "
                         "(e.g. %Y-%m-%d %H:%M; write %% for a literal %)")


def check_template(template: str) -> None:
    leftover = PLACEHOLDER.sub("", template)
    if "{" in leftover or "}" in leftover:
        raise ValueError(f"template '{template}' has an unbalanced {{ or }}: each placeholder is "
                         "{lead_field}, and templates cannot hold literal braces")


def known_lead_fields() -> set[str]:
    fields = set(CORE_LEAD_FIELDS) | set(PIPELINE_FIELDS)
    for cls in MARKETPLACES.values():
        fields.update(cls.lead_fields)
    return fields


def fields_only_from(marketplaces: set[str]) -> dict[str, list[str]]:
    """Lead fields that only other marketplaces carry, each with the marketplaces that do carry it."""
    others: dict[str, list[str]] = {}
    ours = set(CORE_LEAD_FIELDS) | set(PIPELINE_FIELDS)
    for name, cls in MARKETPLACES.items():
        if name in marketplaces:
            ours.update(cls.lead_fields)
        else:
            for field in cls.lead_fields:
                others.setdefault(field, []).append(name)
    return {field: sorted(names) for field, names in others.items() if field not in ours}


def check_path(path: str) -> str:
    root = path.split(".", 1)[0]
    known = known_lead_fields()
    if root not in known:
        raise ValueError(f"unknown lead field '{root}'{did_you_mean(root, known)}")
    return path


class FieldSpec(BaseModel):
    """How one destination field gets its value."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    from_: str | None = Field(default=None, alias="from", title="Lead field",
                              description="path of the lead field to read, e.g. first_name or "
                                          "score_breakdown.phone_valid",
                              examples=["first_name"])
    value: Any = Field(default=None, title="Constant", description="a fixed value", examples=["Leaditio"])
    template: str | None = Field(default=None, title="Template",
                                 description="text with {lead_field} placeholders",
                                 examples=["{first_name} (Leaditio)"])
    transforms: list[str | dict[str, Any]] = Field(
        default_factory=list, title="Transforms",
        description="applied in order: " + "; ".join(f"{k}: {t.help}" for k, t in TRANSFORMS.items()),
        examples=[["trim", "title"], ["e164"], [{"truncate": 40}]])
    map: dict[str, Any] | None = Field(default=None, title="Value map",
                                       description="replace values after the transforms, e.g. hot: Hot",
                                       examples=[{"hot": "Hot", "warm": "Warm"}])
    otherwise: Any = Field(default=None, title="Unmapped value",
                           description="used when the value is not in `map` (default: keep the value)")
    default: Any = Field(default=None, title="Default", description="used when the result is empty")
    required: bool = Field(default=False, title="Required",
                           description="a lead without a value here is not sent (dead letter)")
    update: UpdatePolicy = Field(default=UpdatePolicy.always, title="Update policy",
                                 description="always: every event; if_empty: only fill an empty CRM field; "
                                             "on_create: only when the record is created; never: not sent")

    @field_validator("from_")
    @classmethod
    def _path(cls, value: str | None) -> str | None:
        return value if value is None else check_path(value)

    @field_validator("template")
    @classmethod
    def _template(cls, value: str | None) -> str | None:
        for path in PLACEHOLDER.findall(value or ""):
            check_path(path)
        check_template(value or "")
        return value

    @field_validator("transforms")
    @classmethod
    def _transforms(cls, steps: list[str | dict[str, Any]]) -> list[str | dict[str, Any]]:
        for step in steps:
            if isinstance(step, dict):
                if len(step) != 1:
                    raise ValueError(f"a transform with an argument is written `name: argument`, got {step}")
                (name, arg), = step.items()
            else:
                name, arg = step, None
            transform = TRANSFORMS.get(name)
            if transform is None:
                raise ValueError(f"unknown transform '{name}'{did_you_mean(name, TRANSFORMS)} "
                                 f"(known: {', '.join(TRANSFORMS)})")
            if transform.arg is not None and not isinstance(arg, transform.arg):
                raise ValueError(f"transform '{name}' needs a {transform.arg.__name__} argument, "
                                 f"e.g. `- {name}: {20 if transform.arg is int else '%Y-%m-%d'}`")
            if transform.arg is None and arg is not None:
                raise ValueError(f"transform '{name}' takes no argument: write `- {name}`")
            if name == "date":
                check_date_format(arg)
        return steps

    @model_validator(mode="after")
    def _one_source(self) -> FieldSpec:
        given = [k for k, v in (("from", self.from_), ("value", self.value), ("template", self.template))
                 if v is not None]
        if len(given) > 1:
            raise ValueError(f"use only one of from, value, template (got {', '.join(given)})")
        if not given and self.default is None:
            raise ValueError("needs one of from, value or template")
        return self


class MappingFile(BaseModel):
    """A destination's field mapping: destination field name -> how to fill it."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True,
                              json_schema_extra={"title": "Lead connector field mapping"})

    schema_: str | None = Field(default=None, alias="$schema")
    description: str | None = None
    fields: dict[str, FieldSpec] = Field(title="Fields", description="destination field name -> its value")


def json_schema() -> dict[str, Any]:
    return MappingFile.model_json_schema(by_alias=True)
