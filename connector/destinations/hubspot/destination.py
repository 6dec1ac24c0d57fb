"""The HubSpot destination: batches of contacts upserted, matched, paced and classified (see the package)."""

from __future__ import annotations

import contextlib
import json
import logging
import math
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import urllib3
from urllib3.util.retry import Retry

from connector.apiclient import Counters
from connector.destinations.base import Destination
from connector.destinations.hubspot import batch, schema, setup
from connector.destinations.hubspot import errors as answers
from connector.destinations.hubspot.batch import Item
from connector.destinations.hubspot.links import RecordLinks
from connector.destinations.hubspot.pacing import TokenBudget
from connector.destinations.hubspot.settings import Settings
from connector.errors import (
    ConfigProblem,
    ConnectorError,
    Permanent,
    Retryable,
    network_error,
)
from connector.mapping import Mapping, shipped_mapping
from connector.pacing import Budgets, local_budgets
from connector.records import OutboundRecord, Outcome, UpdatePolicy

log = logging.getLogger(__name__)

MAX_EXTRA_CALLS = 20  # resends within one send() while isolating refused records

class _Refused(Exception):
    """HubSpot refused a whole request (4xx other than 429): the caller decides what it means."""

    def __init__(self, error: answers.HubSpotError):
        super().__init__(error.message)
        self.error = error


@dataclass
class _Apis:
    objects: Any  # hubspot.crm.objects.BatchApi
    properties: Any  # hubspot.crm.properties.CoreApi
    groups: Any  # hubspot.crm.properties.GroupsApi
    objects_config: Any
    properties_config: Any
    exceptions: tuple[type[Exception], ...]


def hubspot_value(value: Any) -> str:
    """HubSpot takes every property value as text: booleans as true/false, lists `;`-joined."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return str(int(value)) if value.is_integer() else repr(value)
    if isinstance(value, list | tuple | set):
        return ";".join(hubspot_value(v) for v in value)
    if isinstance(value, dict):
        return json.dumps(value, ensure_ascii=False, separators=(",", ":"))
    if value is None:
        return ""
    return str(value)


class HubSpotDestination(Destination):
    kind = "hubspot"
    Settings = Settings
    max_batch = 100
    paced = True

    def __init__(self, name: str, settings: Settings, budgets: Budgets | None = None):
        super().__init__(name, settings)
        self.settings: Settings = settings
        self._token = settings.access_token.get_secret_value().strip()
        # One budget per token, kept in the database: every thread and process delivering with this token
        # shares HubSpot's ten-second window (and our own daily_limit, counted per account day).
        self.pacer = TokenBudget(budgets or local_budgets(), self._token or f"unset:{name}", settings)
        self.budget = self.pacer.budget
        self.counters = Counters()  # requests and 429s this destination saw (benchmarks, tests)
        self._apis: _Apis | None = None
        self._lock = threading.Lock()
        self._background = False  # the batch being sent came from a backfill or reconcile only
        self._waits = False  # setup and checks (a command) wait for the budget; deliveries let the worker rest
        self.links = RecordLinks(host=settings.host, token=self._token, object_type=settings.object,
                                 portal_id=settings.portal_id, ui_domain=settings.ui_domain,
                                 ca_bundle=settings.ca_bundle, timeout=settings.timeout, paced=self._paced)

    # --- the SDK, built once (each `client.crm...batch_api` access builds a new pool) ----
    def _sdk(self) -> _Apis:
        if self._apis is None:
            with self._lock:
                if self._apis is None:
                    self._apis = self._build_sdk()
        return self._apis

    def _build_sdk(self) -> _Apis:
        # hubspot-api-client (hundreds of generated modules) is loaded on first use, never by the receiver.
        from hubspot import HubSpot
        from hubspot.crm.objects import ApiException as ObjectsApiException
        from hubspot.crm.properties import ApiException as PropertiesApiException

        if not self._token:
            raise ConfigProblem("no HubSpot access token: set access_token: ${HUBSPOT_ACCESS_TOKEN} and the "
                                "variable to the private app's token", code="no_token")
        # Connection trouble only; an upsert is idempotent, so a read retry cannot make a second contact.
        retry = Retry(total=2, connect=2, read=1, status=0, other=0, redirect=0, allowed_methods=None,
                      raise_on_status=False)
        client = HubSpot(access_token=self._token, host=self.settings.host.rstrip("/"),
                         ssl_ca_cert=self.settings.ca_bundle, retry=retry,
                         client_side_validation=self.settings.client_side_validation)
        objects = client.crm.objects.batch_api
        properties = client.crm.properties.core_api
        return _Apis(objects=objects, properties=properties, groups=client.crm.properties.groups_api,
                     objects_config=objects.api_client.configuration,
                     properties_config=properties.api_client.configuration,
                     exceptions=(ObjectsApiException, PropertiesApiException))

    @property
    def _timeout(self) -> tuple[float, float]:
        return (min(10.0, self.settings.timeout), self.settings.timeout)

    # --- one HubSpot request: the shared budget, timeout, 429s -----------------------------
    def _call(self, method: Callable[..., Any], *args: Any, **kwargs: Any) -> tuple[Any, int]:
        """Send one request through the shared budget; returns (data, status).

        Raises `_Refused` for a 4xx HubSpot refused, or a classified error for everything the
        whole request suffers (network, 5xx, auth, a 429, the budget saying wait: `Paced`, or a
        daily limit: a pause of the destination). Nothing here sleeps or resends: the worker does.
        """
        apis = self._sdk()
        self.pacer.take(self._background, self._waits)
        self.counters.add("requests")
        try:
            data, status, headers = method(*args, _request_timeout=self._timeout, **kwargs)
        except apis.exceptions as exc:
            self.pacer.answered(getattr(exc, "headers", None))
            error = answers.from_answer(getattr(exc, "status", None), getattr(exc, "body", None),
                                        getattr(exc, "headers", None))
            if error.status == 429:
                self.counters.add("rate_limited")
                self.pacer.rate_limited(error, self.name)
                raise error.classified() from None
            if error.status is not None and 400 <= error.status < 500 and error.status not in (401, 403):
                raise _Refused(error) from None
            raise error.classified() from None
        except urllib3.exceptions.HTTPError as exc:
            self.pacer.answered(None)  # it may have arrived: it counts a whole window from now
            raise network_error("hubspot", exc) from None
        except ValueError as exc:  # the SDK could not read the answer (client_side_validation, dates)
            self.pacer.answered(None)
            raise Retryable(f"HubSpot answered with a body the client could not read: {exc}",
                            code="unreadable_answer") from None
        self.pacer.answered(headers)
        return data, status

    # --- sending ---------------------------------------------------------------------------
    def send(self, records: list[OutboundRecord]) -> list[Outcome]:
        self._background = all(record.background for record in records)
        outcomes: dict[int, Outcome] = {}
        items: list[Item] = []
        seen: set[str] = set()
        id_property = self.settings.id_property
        for record in records:
            key = self._key(record.values.get(id_property))
            if key is None:
                outcomes[record.delivery_id] = Outcome(record.delivery_id, error=Permanent(
                    f"the lead has no value for '{id_property}', the property HubSpot matches contacts on",
                    code="missing_id", field=id_property))
            elif key in seen:
                outcomes[record.delivery_id] = Outcome(record.delivery_id, error=Retryable(
                    f"another lead in this batch has the same {id_property}; it goes in the next batch",
                    retry_after=1.0, code="DUPLICATE_ID_IN_BATCH", field=id_property))
            else:
                seen.add(key)
                items.append(Item(record, key))
        if not items:
            return list(outcomes.values())
        try:
            existing = self._existing(items)
        except (ConnectorError, _Refused) as exc:
            failure = exc.error.classified() if isinstance(exc, _Refused) else exc
            if not outcomes:
                raise failure from None
            outcomes.update({i.record.delivery_id: Outcome(i.record.delivery_id, error=failure) for i in items})
            return list(outcomes.values())
        for item in items:
            payload = item.record.payload(existing.get(item.key) if existing is not None and
                                          self._looked_up(item) else None)
            payload.pop(id_property, None)
            item.properties = {name: hubspot_value(value) for name, value in payload.items()}
            item.properties[id_property] = item.key  # the only thing a result can be matched by
        outcomes.update(self._deliver(items, answered_before=bool(outcomes)))
        return [outcomes[record.delivery_id] for record in records]  # in the order sent, for readable logs

    def _key(self, value: Any) -> str | None:
        if value is None:
            return None
        text = hubspot_value(value).strip()
        if not text:
            return None
        return text.lower() if self.settings.id_property == "email" else text

    def _match_existing(self) -> bool:
        if self.settings.match_existing is not None:
            return self.settings.match_existing
        return self.settings.id_property == "email"

    def _looked_up(self, item: Item) -> bool:
        """Whether this record's current values in HubSpot change what we write."""
        record = item.record
        present = [record.policies.get(n, UpdatePolicy.always) for n in record.values
                   if n != self.settings.id_property]
        if record.known:
            return UpdatePolicy.if_empty in present
        return self._match_existing() and any(p in (UpdatePolicy.if_empty, UpdatePolicy.on_create) for p in present)

    def _existing(self, items: list[Item]) -> dict[str, dict[str, Any]] | None:
        """One batch read of the records whose current values matter; key -> properties ({} if absent)."""
        wanted = [item for item in items if self._looked_up(item)]
        if not wanted:
            return None
        # hubspot-api-client is loaded on first use (see _build_sdk).
        from hubspot.crm.objects import BatchReadInputSimplePublicObjectId, SimplePublicObjectId

        apis = self._sdk()
        config = apis.objects_config
        id_property = self.settings.id_property
        names = sorted({n for item in wanted for n, p in item.record.policies.items()
                        if p is not UpdatePolicy.always and n in item.record.values} | {id_property})
        found: dict[str, dict[str, Any]] = {item.key: {} for item in wanted}
        for start in range(0, len(wanted), self.max_batch):
            body = BatchReadInputSimplePublicObjectId(
                id_property=id_property, properties=names, properties_with_history=[],
                inputs=[SimplePublicObjectId(id=item.key, local_vars_configuration=config)
                        for item in wanted[start:start + self.max_batch]],
                local_vars_configuration=config)
            data, _ = self._call(apis.objects.read_with_http_info, self.settings.object, body)
            for result in getattr(data, "results", None) or []:  # absent ones come back as 207 errors
                properties = dict(result.properties or {})
                key = self._key(properties.get(id_property))
                if key is not None:
                    found[key] = {**properties, "hs_object_id": result.id}
        return found

    def _deliver(self, items: list[Item], *, answered_before: bool) -> dict[int, Outcome]:
        """Upsert in as few calls as HubSpot allows; isolate records it refuses and resend the rest."""
        outcomes: dict[int, Outcome] = {}
        queue: list[list[Item]] = [items[i:i + self.max_batch] for i in range(0, len(items), self.max_batch)]
        calls_left = len(queue) + min(MAX_EXTRA_CALLS, 2 * math.ceil(math.log2(len(items) + 1)) + 4)
        while queue:
            group = queue.pop(0)
            if calls_left <= 0:
                for item in group:
                    outcomes[item.record.delivery_id] = Outcome(item.record.delivery_id, error=Retryable(
                        "not sent: HubSpot refused other leads of this batch; it goes again shortly",
                        retry_after=1.0, code="batch_isolation"))
                continue
            calls_left -= 1
            try:
                data, status = self._upsert(group)
                outcomes.update(batch.results(data, status, group, self._key, self.settings.id_property))
            except (_Refused, ConnectorError) as exc:
                try:
                    if not isinstance(exc, _Refused):
                        raise exc
                    queue += batch.isolate(exc.error, group, outcomes)
                    continue
                except ConnectorError as failure:  # the whole request failed: so will the rest
                    if not outcomes and not answered_before:
                        raise
                    for item in group + [i for g in queue for i in g]:
                        outcomes[item.record.delivery_id] = Outcome(item.record.delivery_id, error=failure)
                    break
        return outcomes

    def _upsert(self, group: list[Item]) -> tuple[Any, int]:
        # hubspot-api-client is loaded on first use (see _build_sdk).
        from hubspot.crm.objects import (
            BatchInputSimplePublicObjectBatchInputUpsert,
            SimplePublicObjectBatchInputUpsert,
        )

        apis = self._sdk()
        config = apis.objects_config
        inputs = [SimplePublicObjectBatchInputUpsert(
            id_property=self.settings.id_property, id=item.key, properties=item.properties,
            object_write_trace_id=item.trace, local_vars_configuration=config) for item in group]
        body = BatchInputSimplePublicObjectBatchInputUpsert(inputs=inputs, local_vars_configuration=config)
        return self._call(apis.objects.upsert_with_http_info, self.settings.object, body)

    # --- setup and checks --------------------------------------------------------------------

    def _properties(self) -> dict[str, Any]:
        self._waits, self._background = True, False  # a command: wait for the budget rather than fail
        return setup.read_properties(self._call, self._sdk(), self.settings.object)

    def check_against_crm(self, mapping: Mapping) -> list[str]:
        try:
            properties = self._properties()
        except _Refused as refused:
            return [f"could not read HubSpot's {self.settings.object} properties: {refused.error.readable()}"]
        except ConnectorError as exc:
            return [f"could not read HubSpot's {self.settings.object} properties: {exc.describe()}"]
        return schema.check_mapping(mapping, properties, object_type=self.settings.object,
                                    id_property=self.settings.id_property,
                                    setup_hint=f"`connector crm setup {self.name}`")

    def setup(self, mapping: Mapping | None = None) -> list[str]:
        """Create the property group and the custom properties the mapping needs; safe to repeat."""
        self._waits, self._background = True, False
        try:
            return setup.create_properties(self._call, self._sdk(), self.settings, mapping or shipped_mapping("hubspot.yaml"))
        except _Refused as refused:
            raise refused.error.classified() from None

    def record_url(self, crm_id: str) -> str | None:
        return self.links.url(crm_id)

    def _paced(self, request: Callable[[], Any]) -> Any:
        """A request outside the SDK (the account lookup for record links) inside the token's shared
        budget; it is sent from the notices' thread, so it waits for room rather than handing back."""
        self.pacer.take(background=False, waits=True)
        answer = None
        try:
            answer = request()
            return answer
        finally:
            self.pacer.answered(getattr(answer, "headers", None))

    def close(self) -> None:
        apis, self._apis = self._apis, None
        if apis is not None:
            for api in (apis.objects, apis.properties, apis.groups):
                with contextlib.suppress(AttributeError):
                    api.api_client.rest_client.pool_manager.clear()
