"""YAML field mappings: turn one canonical lead into the record a destination receives."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from connector import yamlfile
from connector.errors import ConfigProblem, Permanent
from connector.lead import get_path
from connector.mapping.spec import PLACEHOLDER, FieldSpec, MappingFile, fields_only_from
from connector.mapping.transforms import TRANSFORMS, Unusable
from connector.records import MappedRecord


def _empty(value: Any) -> bool:
    return value is None or value == "" or value == []


class TransformFailed(Exception):
    """A transform raised on one lead's value; `Mapping.apply` names the field."""

    def __init__(self, transform: str, reason: str):
        super().__init__(f"{transform}: {reason}")
        self.transform, self.reason = transform, reason


class Mapping:
    def __init__(self, path: Path, spec: MappingFile, yaml: yamlfile.YamlDocument):
        self.path = path
        self.spec = spec
        self.yaml = yaml  # where each key stood, for messages that name a line
        self.fields: dict[str, FieldSpec] = spec.fields
        self.policies = {name: f.update for name, f in self.fields.items()}

    def lead_fields_read(self) -> list[tuple[str, str, str]]:
        """(destination field, its key in the file, lead field) for every lead field a `from` or template reads."""
        read = []
        for name, field in self.fields.items():
            if field.from_ is not None:
                read.append((name, "from", field.from_.split(".", 1)[0]))
            read.extend((name, "template", path.split(".", 1)[0])
                        for path in PLACEHOLDER.findall(field.template or ""))
        return read

    def unfed_fields(self, marketplaces: set[str]) -> list[str]:
        """Warnings (file:line: key: message) for lead fields that no marketplace in `marketplaces` carries:
        they would always be empty. None without marketplaces: then a backfill chooses the leads."""
        if not marketplaces:
            return []
        elsewhere = fields_only_from(marketplaces)
        return [str(self.yaml.error(
                    ("fields", name, key),
                    f"'{field}' comes only with {' and '.join(elsewhere[field])} leads, and no "
                    f"{' or '.join(elsewhere[field])} source is routed here ({', '.join(sorted(marketplaces))}), "
                    f"so it stays empty"))
                for name, key, field in self.lead_fields_read() if field in elsewhere]

    def apply(self, document: dict[str, Any]) -> MappedRecord:
        """Map one lead (see connector.lead.mapping_input); Permanent if a required field is empty."""
        values: dict[str, Any] = {}
        notes: dict[str, str] = {}
        for name, spec in self.fields.items():
            try:
                value, note = self._value(spec, document)
            except TransformFailed as exc:
                raise Permanent(f"mapping {self.path.name}: field {name}: transform '{exc.transform}' failed on this "
                                f"lead's value ({exc.reason}); fix the mapping or the lead, then retry the dead letter",
                                field=name, code="mapping_transform") from None
            if note is not None:
                notes[name] = note
            if _empty(value):
                if spec.required:
                    why = f" ({note})" if note else ""
                    raise Permanent(f"mapping {self.path.name}: field {name} is required but the lead has "
                                    f"no value for it{why}", field=name, code="mapping_required")
                if value is None:
                    continue
            values[name] = value
        return MappedRecord(values, self.policies, notes)

    @staticmethod
    def _value(field: FieldSpec, document: dict[str, Any]) -> tuple[Any, str | None]:
        """The field's value, and why it is empty when a transform could not use the lead's value."""
        if field.from_ is not None:
            value = get_path(document, field.from_)
        elif field.template is not None:
            parts = {p: get_path(document, p) for p in PLACEHOLDER.findall(field.template)}
            if parts and all(_empty(v) for v in parts.values()):
                value = None
            else:
                value = PLACEHOLDER.sub(lambda m: "" if _empty(parts[m.group(1)]) else str(parts[m.group(1)]),
                                        field.template).strip()
        else:
            value = field.value
        note = None
        for step in field.transforms:
            name, arg = next(iter(step.items())) if isinstance(step, dict) else (step, None)
            transform = TRANSFORMS[name]
            try:
                value = transform.func(value, arg) if transform.arg is not None else transform.func(value)
            except Unusable as unusable:
                value, note = None, f"{name}: {unusable.reason}; left empty"
                break
            except Exception as exc:  # e.g. a date past year 9999: this lead's problem, not the worker's
                raise TransformFailed(name, f"{type(exc).__name__}: {str(exc)[:200]}") from exc
        if field.map is not None and not _empty(value):
            key = str(value)
            value = field.map.get(key, field.otherwise if field.otherwise is not None else value)
        if _empty(value) and field.default is not None:
            value = field.default
        return value, note


def load_mapping(path: str | Path) -> Mapping:
    """Read and check a mapping file; every mistake is a ConfigError naming file, line and field."""
    doc = yamlfile.load_yaml(path)
    if not isinstance(doc.data, dict):
        raise doc.error((), "a mapping file must start with `fields:`")
    spec = yamlfile.validate(doc, MappingFile)
    return Mapping(Path(path), spec, doc)


def shipped_mapping(filename: str) -> Mapping:
    """`crm setup` without a mapping: mappings/<filename> in the working folder, else the one shipped with the code."""
    relative = Path("mappings") / filename
    for base in (Path.cwd(), Path(__file__).resolve().parents[2]):
        if (base / relative).exists():
            return load_mapping(base / relative)
    raise ConfigProblem(f"no mapping given and no {relative} found", code="no_mapping")


__all__ = ["Mapping", "MappedRecord", "load_mapping", "shipped_mapping"]
