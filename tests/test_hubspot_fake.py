"""The fake HubSpot answers as the real API does: checked through hubspot-api-client itself.

The SDK runs with `client_side_validation=True`, so a fake answer missing a field HubSpot's spec
requires, or using a status code the SDK does not expect, fails here rather than hiding in the
destination's tests.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from hubspot import HubSpot
from hubspot.crm.objects import (
    ApiException,
    BatchInputSimplePublicObjectBatchInputUpsert,
    BatchReadInputSimplePublicObjectId,
    BatchResponseSimplePublicObjectWithErrors,
    BatchResponseSimplePublicUpsertObject,
    BatchResponseSimplePublicUpsertObjectWithErrors,
    SimplePublicObjectBatchInputUpsert,
    SimplePublicObjectId,
)
from hubspot.crm.properties import ApiException as PropertiesApiException
from hubspot.crm.properties import (
    ModelProperty,
    OptionInput,
    PropertyCreate,
    PropertyGroup,
    PropertyGroupCreate,
)
from hubspot.crm.properties.exceptions import NotFoundException
from urllib3.util.retry import Retry

from fakes.hubspot import FakeHubSpot, hubspot_server

TIMEOUT = (5, 10)


@pytest.fixture
def token() -> str:
    return f"pat-na1-{uuid.uuid4()}"


@pytest.fixture
def fake(token: str) -> FakeHubSpot:
    return FakeHubSpot(tokens=(token,))


@pytest.fixture
def client(fake: FakeHubSpot, token: str, tmp_path: Any) -> Iterator[tuple[FakeHubSpot, Any, Any]]:
    with hubspot_server(fake, tls=True, ca_dir=tmp_path) as (_, url, ca):
        sdk = HubSpot(access_token=token, host=url, ssl_ca_cert=ca, client_side_validation=True,
                      retry=Retry(total=0, raise_on_status=False))
        yield fake, sdk.crm.objects.batch_api, sdk.crm.properties


def upsert_body(api: Any, *inputs: dict[str, Any]) -> BatchInputSimplePublicObjectBatchInputUpsert:
    config = api.api_client.configuration
    return BatchInputSimplePublicObjectBatchInputUpsert(inputs=[
        SimplePublicObjectBatchInputUpsert(local_vars_configuration=config, **i) for i in inputs],
        local_vars_configuration=config)


def body_of(exc: Any) -> dict[str, Any]:
    return json.loads(exc.body)


def test_upsert_creates_then_updates_with_spec_complete_answers(client: Any) -> None:
    fake, batch, _ = client
    body = upsert_body(batch, {"id": "A@Example.com", "id_property": "email",
                               "properties": {"email": "A@Example.com", "firstname": "Thabo"}})
    data, status, headers = batch.upsert_with_http_info("contacts", body, _request_timeout=TIMEOUT)
    assert status == 200 and isinstance(data, BatchResponseSimplePublicUpsertObject)
    assert data.status == "COMPLETE" and data.results[0].new is True
    assert data.results[0].properties["email"] == "A@Example.com"
    assert headers["X-HubSpot-RateLimit-Max"] == "100" and int(headers["X-HubSpot-RateLimit-Remaining"]) == 99
    again, status, _ = batch.upsert_with_http_info("contacts", upsert_body(
        batch, {"id": "a@example.com", "id_property": "email", "properties": {"lastname": "M"}}),
        _request_timeout=TIMEOUT)
    assert status == 200 and again.results[0].new is False and again.results[0].id == data.results[0].id
    assert len(fake.contacts) == 1


def test_multi_status_207_names_the_failed_input_by_trace_id(client: Any) -> None:
    fake, batch, _ = client
    body = upsert_body(
        batch,
        {"id": "good@example.com", "id_property": "email", "properties": {"email": "good@example.com"},
         "object_write_trace_id": "1"},
        {"id": "bad@example.com", "id_property": "email", "properties": {"lifecyclestage": "Lead"},
         "object_write_trace_id": "2"})
    data, status, _ = batch.upsert_with_http_info("contacts", body, _request_timeout=TIMEOUT)
    assert status == 207 and isinstance(data, BatchResponseSimplePublicUpsertObjectWithErrors)
    assert [r.object_write_trace_id for r in data.results] == [None]  # HubSpot names trace ids on errors only
    assert data.results[0].properties["email"] == "good@example.com"
    assert data.num_errors == 1
    error = data.errors[0]
    assert error.category == "VALIDATION_ERROR" and error.context == {"objectWriteTraceId": ["2"]}
    assert error.errors[0].code == "INVALID_OPTION" and error.errors[0]._in == "lifecyclestage"
    assert fake.find("email", "bad@example.com") is None


def test_successful_results_carry_no_trace_id_come_in_any_order_and_echo_only_sent_properties(
        client: Any) -> None:
    """As HubSpot: results only match their inputs by a property the input sent (nodejs#190)."""
    fake, batch, _ = client
    inputs = [{"id": f"p{i}@example.com", "id_property": "email", "object_write_trace_id": str(i),
               "properties": {"email": f"p{i}@example.com"} if i % 2 else {"firstname": f"P{i}"}}
              for i in range(40)]
    data, status, _ = batch.upsert_with_http_info("contacts", upsert_body(batch, *inputs), _request_timeout=TIMEOUT)
    assert status == 200 and len(data.results) == 40
    assert all(r.object_write_trace_id is None for r in data.results)
    echoed = [r.properties.get("email") for r in data.results]
    assert sorted(e for e in echoed if e) == sorted(f"p{i}@example.com" for i in range(1, 40, 2))
    assert echoed.count(None) == 20  # the id given only as `id` is not echoed
    order = [r.properties.get("email") or r.properties.get("firstname") for r in data.results]
    assert order != [i["properties"].get("email") or i["properties"].get("firstname") for i in inputs]
    assert fake.find("email", "p0@example.com") is not None  # the idProperty is still set on create


def test_without_trace_ids_one_bad_input_fails_the_whole_batch(client: Any) -> None:
    fake, batch, _ = client
    body = upsert_body(batch, {"id": "ok@example.com", "id_property": "email", "properties": {}},
                       {"id": "nope", "id_property": "email", "properties": {}})
    with pytest.raises(ApiException) as caught:
        batch.upsert("contacts", body, _request_timeout=TIMEOUT)
    assert caught.value.status == 400
    answer = body_of(caught.value)
    assert answer["category"] == "VALIDATION_ERROR" and answer["correlationId"]
    assert answer["message"].startswith("Property values were not valid: [")
    problems = json.loads(answer["message"].split(": ", 1)[1])
    assert problems[0]["error"] == "INVALID_EMAIL" and problems[0]["name"] == "email"
    assert fake.contacts == {}  # all or nothing


@pytest.mark.parametrize(("inputs", "status", "message"), [
    ([{"id": f"p{i}@example.com", "id_property": "email", "properties": {}} for i in range(101)], 400,
     "exceeds the maximum of 100"),
    ([{"id": "x@example.com", "id_property": "email", "properties": {}},
      {"id": "X@example.com", "id_property": "email", "properties": {}}], 400, "Duplicate IDs"),
    ([{"id": "Thabo", "id_property": "firstname", "properties": {}}], 400, "non-unique 0-1 property firstname"),
])
def test_whole_batch_refusals(client: Any, inputs: list[dict[str, Any]], status: int, message: str) -> None:
    _, batch, _ = client
    with pytest.raises(ApiException) as caught:
        batch.upsert("contacts", upsert_body(batch, *inputs), _request_timeout=TIMEOUT)
    assert caught.value.status == status
    assert message in body_of(caught.value)["message"]


def test_taken_email_is_a_409_conflict_and_unique_property_clash_a_400(client: Any) -> None:
    fake, batch, properties = client
    properties.core_api.create("contacts", PropertyCreate(name="lead_ref", label="Lead ref", type="string",
                                                          field_type="text", group_name="contactinformation",
                                                          has_unique_value=True), _request_timeout=TIMEOUT)
    existing = fake.add_contact({"email": "taken@example.com", "lead_ref": "R1"})
    with pytest.raises(ApiException) as caught:
        batch.upsert("contacts", upsert_body(
            batch, {"id": "R2", "id_property": "lead_ref", "properties": {"email": "taken@example.com"}}),
            _request_timeout=TIMEOUT)
    assert caught.value.status == 409
    assert body_of(caught.value)["message"] == f"Contact already exists. Existing ID: {existing}"
    with pytest.raises(ApiException) as caught:
        batch.upsert("contacts", upsert_body(
            batch, {"id": "new@example.com", "id_property": "email", "properties": {"lead_ref": "R1"}}),
            _request_timeout=TIMEOUT)
    assert caught.value.status == 400 and "unique" in body_of(caught.value)["message"]


def test_batch_read_reports_missing_ids_as_207(client: Any) -> None:
    fake, batch, _ = client
    fake.add_contact({"email": "here@example.com", "firstname": "Lerato"})
    config = batch.api_client.configuration
    body = BatchReadInputSimplePublicObjectId(
        id_property="email", properties=["firstname", "email"], properties_with_history=[],
        inputs=[SimplePublicObjectId(id="here@example.com", local_vars_configuration=config),
                SimplePublicObjectId(id="gone@example.com", local_vars_configuration=config)],
        local_vars_configuration=config)
    data, status, _ = batch.read_with_http_info("contacts", body, _request_timeout=TIMEOUT)
    assert status == 207 and isinstance(data, BatchResponseSimplePublicObjectWithErrors)
    assert data.results[0].properties["firstname"] == "Lerato"
    assert data.errors[0].category == "OBJECT_NOT_FOUND" and data.errors[0].context == {"ids": ["gone@example.com"]}


def test_auth_and_scope_errors(client: Any, fake: FakeHubSpot, token: str) -> None:
    _, batch, _ = client
    body = upsert_body(batch, {"id": "a@example.com", "id_property": "email", "properties": {}})
    fake.limit_scopes(token, {"crm.objects.contacts.read"})
    with pytest.raises(ApiException) as caught:
        batch.upsert("contacts", body, _request_timeout=TIMEOUT)
    assert caught.value.status == 403 and body_of(caught.value)["category"] == "MISSING_SCOPES"
    fake.revoke(token)
    with pytest.raises(ApiException) as caught:
        batch.upsert("contacts", body, _request_timeout=TIMEOUT)
    assert caught.value.status == 401 and body_of(caught.value)["category"] == "EXPIRED_AUTHENTICATION"


def test_unknown_token_is_401(fake: FakeHubSpot) -> None:
    with hubspot_server(fake) as (_, url, _ca):
        api = HubSpot(access_token="pat-na1-wrong", host=url, client_side_validation=True).crm.objects.batch_api
        with pytest.raises(ApiException) as caught:
            api.upsert("contacts", upsert_body(api, {"id": "a@example.com", "id_property": "email",
                                                     "properties": {}}), _request_timeout=TIMEOUT)
    assert caught.value.status == 401 and body_of(caught.value)["category"] == "INVALID_AUTHENTICATION"


def test_rate_limit_429_bodies_and_headers(token: str) -> None:
    fake = FakeHubSpot(tokens=(token,), max_per_interval=2, interval_ms=60_000, daily_limit=3, retry_after=True)
    with hubspot_server(fake) as (_, url, _ca):
        api = HubSpot(access_token=token, host=url, client_side_validation=True,
                      retry=Retry(total=0, raise_on_status=False)).crm.properties.groups_api
        api.get_all("contacts", _request_timeout=TIMEOUT)
        api.get_all("contacts", _request_timeout=TIMEOUT)
        with pytest.raises(PropertiesApiException) as caught:
            api.get_all("contacts", _request_timeout=TIMEOUT)
        answer = body_of(caught.value)
        assert caught.value.status == 429
        assert answer["policyName"] == "TEN_SECONDLY_ROLLING" and answer["errorType"] == "RATE_LIMIT"
        assert caught.value.headers["X-HubSpot-RateLimit-Remaining"] == "0"
        assert caught.value.headers["X-HubSpot-RateLimit-Interval-Milliseconds"] == "60000"
        assert int(caught.value.headers["Retry-After"]) > 0
        fake.max_per_interval = 100
        api.get_all("contacts", _request_timeout=TIMEOUT)
        with pytest.raises(PropertiesApiException) as caught:
            api.get_all("contacts", _request_timeout=TIMEOUT)
        assert body_of(caught.value)["policyName"] == "DAILY"
        assert caught.value.headers["X-HubSpot-RateLimit-Daily-Remaining"] == "0"


def test_properties_api_404_201_409_and_groups(client: Any) -> None:
    _, _, properties = client
    core = properties.core_api
    with pytest.raises(NotFoundException) as caught:
        core.get_by_name("contacts", "leaditio_tier", _request_timeout=TIMEOUT)
    assert body_of(caught.value)["category"] == "OBJECT_NOT_FOUND"
    config = core.api_client.configuration
    group, status, _ = properties.groups_api.create_with_http_info(
        "contacts", PropertyGroupCreate(name="leaditio", label="Lead marketplace", local_vars_configuration=config),
        _request_timeout=TIMEOUT)
    assert status == 201 and isinstance(group, PropertyGroup)
    create = PropertyCreate(name="leaditio_tier", label="Tier", type="enumeration", field_type="select",
                            group_name="leaditio", local_vars_configuration=config, options=[
                                OptionInput(label="Hot", value="hot", hidden=False, display_order=0,
                                            local_vars_configuration=config)])
    prop, status, _ = core.create_with_http_info("contacts", create, _request_timeout=TIMEOUT)
    assert status == 201 and isinstance(prop, ModelProperty)
    assert prop.options[0].value == "hot" and prop.modification_metadata.read_only_value is False
    with pytest.raises(PropertiesApiException) as caught:
        core.create("contacts", create, _request_timeout=TIMEOUT)
    assert caught.value.status == 409
    every = core.get_all("contacts", _request_timeout=TIMEOUT).results
    assert {"email", "lifecyclestage", "leaditio_tier"} <= {p.name for p in every}
