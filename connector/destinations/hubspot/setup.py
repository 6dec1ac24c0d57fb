"""What the mapping needs in HubSpot: `connector crm setup` creates it, `mappings check --against-crm` checks it.

The calls go through the destination's own `call` (its pacing and error classification) and its SDK
clients, so setup spends the same budget as deliveries.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from connector.destinations.hubspot import schema
from connector.destinations.hubspot.settings import Settings
from connector.errors import ConfigProblem
from connector.mapping import Mapping

Call = Callable[..., tuple[Any, int]]


def read_properties(call: Call, apis: Any, object_type: str) -> dict[str, Any]:
    """The object's properties by name."""
    data, _ = call(apis.properties.get_all_with_http_info, object_type)
    return {prop.name: prop for prop in data.results or []}


def create_properties(call: Call, apis: Any, s: Settings, mapping: Mapping) -> list[str]:
    """Create the property group and the custom properties the mapping needs; safe to repeat."""
    # hubspot-api-client is large: imported when first used, as the destination's SDK clients are.
    from hubspot.crm.properties import OptionInput, PropertyCreate, PropertyGroupCreate, PropertyUpdate

    config = apis.properties_config
    done: list[str] = []
    groups, _ = call(apis.groups.get_all_with_http_info, s.object)
    if s.property_group not in {g.name for g in groups.results or []}:
        call(apis.groups.create_with_http_info, s.object, PropertyGroupCreate(
            name=s.property_group, label=s.property_group_label, display_order=-1,
            local_vars_configuration=config))
        done.append(f"created property group '{s.property_group}' ({s.property_group_label})")
    existing = read_properties(call, apis, s.object)
    for name, spec in schema.sent_fields(mapping):
        wanted = schema.infer_property(name, spec, id_property=s.id_property)
        prop = existing.get(name)
        if prop is None:
            close = schema.close_names(name, [n for n, p in existing.items()
                                              if getattr(p, "hubspot_defined", False)])
            if close:
                done.append(f"not created '{name}': it looks like HubSpot's own '{close[0]}'; fix the mapping")
                continue
            options = [OptionInput(label=schema.option_label(v), value=v, display_order=i, hidden=False,
                                   local_vars_configuration=config) for i, v in enumerate(wanted.options)]
            call(apis.properties.create_with_http_info, s.object, PropertyCreate(
                name=name, label=wanted.label, type=wanted.type, field_type=wanted.field_type,
                group_name=s.property_group, has_unique_value=wanted.unique, options=options or None,
                description=f"Set by the lead connector from mapping {mapping.path.name}",
                local_vars_configuration=config))
            done.append(f"created {wanted.describe()}")
            continue
        if name == s.id_property and name != "email" and not schema.is_unique(prop):
            raise ConfigProblem(
                f"HubSpot property '{name}' exists but does not require unique values, so contacts cannot be "
                f"matched on it (and HubSpot cannot change that): set id_property to another name and run "
                f"setup again, or delete '{name}' in HubSpot first", code="NON_UNIQUE_ID_PROPERTY")
        if prop.type == "enumeration" and wanted.options and not getattr(prop, "hubspot_defined", False):
            have = schema.option_values(prop)
            missing = [v for v in wanted.options if v not in have]
            if missing:
                options = [OptionInput(label=o.label, value=o.value, display_order=o.display_order
                                       if o.display_order is not None else i, hidden=bool(o.hidden),
                                       local_vars_configuration=config) for i, o in enumerate(prop.options)]
                options += [OptionInput(label=schema.option_label(v), value=v, display_order=len(options) + i,
                                        hidden=False, local_vars_configuration=config)
                            for i, v in enumerate(missing)]
                call(apis.properties.update_with_http_info, s.object, name, PropertyUpdate(
                    options=options, local_vars_configuration=config))
                done.append(f"added options {', '.join(missing)} to '{name}'")
    return done
