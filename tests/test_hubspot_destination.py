"""The HubSpot destination against the fake HubSpot, through the real hubspot-api-client.

Leads are mapped with the bundled mappings/hubspot.yaml; the SDK runs with client_side_validation
so every request we build and every answer we read is checked against HubSpot's API models.
"""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from connector.destinations.hubspot import HubSpotDestination, Settings, hubspot_value
from connector.errors import ConfigProblem, Paced, Permanent, RateLimited, Retryable
from connector.lead import mapping_input
from connector.mapping import Mapping, load_mapping
from connector.records import OutboundRecord
from fakes.hubspot import FakeHubSpot, hubspot_server

ROOT = Path(__file__).resolve().parent.parent
MAPPING = ROOT / "mappings" / "hubspot.yaml"


def lead(n: int, **overrides: Any) -> dict[str, Any]:
    base = {"id": f"lead_{n:05d}", "vertical": "solar", "sub_vertical": "installation", "first_name": "thabo",
            "last_name": "mokoena", "suburb": "Sandton", "province": "Gauteng", "score": 87, "score_tier": "hot",
            "service_type": "Solar Installation 10kW+", "budget_range": "R100,000–R150,000", "urgency": "asap",
            "phone": "082 345 6789", "email": f"lead{n}@example.com", "delivered_at": "2026-05-20T10:23:48Z"}
    base.update(overrides)
    return base


def record(mapping: Mapping, n: int, *, delivery_id: int | None = None, event: str = "lead.new",
           known: bool = False, **overrides: Any) -> OutboundRecord:
    mapped = mapping.apply(mapping_input(lead(n, **overrides), source="leaditio", event=event, marketplace="leaditio"))
    return OutboundRecord(delivery_id=delivery_id or n, lead_key=f"leaditio:lead_{n:05d}", event_type=event,
                          values=mapped.values, policies=mapped.policies, known=known)


def plain(n: int) -> OutboundRecord:
    """A lead mapped onto HubSpot's own contact properties only (no setup needed), matched by email."""
    return OutboundRecord(delivery_id=n, lead_key=f"leaditio:lead_{n:05d}", event_type="lead.new",
                          values={"email": f"lead{n}@example.com", "firstname": "Thabo"}, policies={})


@pytest.fixture(scope="module")
def mapping() -> Mapping:
    return load_mapping(MAPPING)


@pytest.fixture
def token() -> str:
    return f"pat-na1-{uuid.uuid4()}"  # budgets are shared per token: every test gets its own


@pytest.fixture
def fake(token: str) -> FakeHubSpot:
    return FakeHubSpot(tokens=(token,))


@pytest.fixture
def server(fake: FakeHubSpot) -> Iterator[str]:
    with hubspot_server(fake) as (_, url, _ca):
        yield url


def destination(url: str, token: str, **settings: Any) -> HubSpotDestination:
    options = {"access_token": token, "host": url, "client_side_validation": True, "timeout": 5, **settings}
    return HubSpotDestination("hubspot", Settings(**options))


@pytest.fixture
def hubspot(server: str, token: str, mapping: Mapping) -> Iterator[HubSpotDestination]:
    dest = destination(server, token)
    dest.setup(mapping)
    yield dest
    dest.close()


def by_id(outcomes: list[Any]) -> dict[int, Any]:
    return {o.delivery_id: o for o in outcomes}


# --- upserts ------------------------------------------------------------------------------
def test_new_leads_become_contacts_one_call_per_100(hubspot: HubSpotDestination, fake: FakeHubSpot,
                                                    mapping: Mapping) -> None:
    before = fake.count("/batch/upsert")
    records = [record(mapping, n) for n in range(1, 151)]
    outcomes = hubspot.send(records[:100]) + hubspot.send(records[100:])
    assert len(outcomes) == 150 and all(o.ok and o.created for o in outcomes)
    assert fake.count("/batch/upsert") - before == 2 and fake.count("/batch/read") == 0
    contact = fake.find("leaditio_lead_id", "leaditio:lead_00007")
    assert contact is not None and outcomes[6].crm_id == contact["id"]
    props = contact["properties"]
    assert props["phone"] == "+27823456789" and props["firstname"] == "thabo" and props["email"] == "lead7@example.com"
    assert props["lifecyclestage"] == "lead" and props["hs_lead_status"] == "NEW"
    assert props["leaditio_tier"] == "hot" and props["leaditio_score"] == "87"
    assert props["leaditio_budget_min"] == "100000" and props["leaditio_budget_max"] == "150000"
    sent = fake.bodies[-2]["inputs"][0]
    assert sent["idProperty"] == "leaditio_lead_id" and sent["objectWriteTraceId"] == "1"
    assert sent["properties"]["leaditio_lead_id"] == "leaditio:lead_00001"  # results match by it
    assert all("objectWriteTraceId" not in r for r in fake.bodies[-2].get("results", []))


def test_updates_settle_in_one_call_with_their_contact_ids(hubspot: HubSpotDestination, fake: FakeHubSpot,
                                                           mapping: Mapping) -> None:
    """Issue 16: HubSpot answers an update batch 200 with shuffled results and no trace ids; every
    record settles at once, each with its own contact (the mapping writes the id property on_create)."""
    first = by_id(hubspot.send([record(mapping, n) for n in range(1, 23)]))
    upserts = fake.count("/batch/upsert")
    updated = by_id(hubspot.send([record(mapping, n, delivery_id=100 + n, event="lead.updated", known=True,
                                         score=50 + n) for n in range(1, 23)]))
    assert fake.count("/batch/upsert") - upserts == 1
    assert all(o.ok and o.created is False for o in updated.values())
    assert {n: updated[100 + n].crm_id for n in range(1, 23)} == {n: first[n].crm_id for n in range(1, 23)}
    sent = fake.bodies[-1]["inputs"]
    assert all(i["properties"]["leaditio_lead_id"] == i["id"] for i in sent)
    assert "lifecyclestage" not in sent[0]["properties"]  # on_create fields stay out of updates
    for n in range(1, 23):
        contact = fake.contacts[first[n].crm_id]
        assert contact["properties"]["leaditio_score"] == str(50 + n)


def test_sending_again_updates_never_duplicates(hubspot: HubSpotDestination, fake: FakeHubSpot,
                                                mapping: Mapping) -> None:
    first = hubspot.send([record(mapping, n) for n in range(1, 11)])
    again = hubspot.send([record(mapping, n, delivery_id=100 + n) for n in range(1, 11)])
    assert len(fake.contacts) == 10
    assert all(o.ok and o.created is False for o in again)
    assert {o.crm_id for o in first} == {o.crm_id for o in again}


def test_a_lead_without_email_still_lands(hubspot: HubSpotDestination, fake: FakeHubSpot, mapping: Mapping) -> None:
    outcome, = hubspot.send([record(mapping, 3, email=None, phone=None)])
    assert outcome.ok
    assert "email" not in fake.find("leaditio_lead_id", "leaditio:lead_00003")["properties"]


def test_updates_refresh_score_and_tier_but_keep_what_sales_changed(hubspot: HubSpotDestination, fake: FakeHubSpot,
                                                                     mapping: Mapping) -> None:
    hubspot.send([record(mapping, 1), record(mapping, 2)])
    contact = fake.find("leaditio_lead_id", "leaditio:lead_00001")
    contact["properties"].update(lifecyclestage="opportunity", hs_lead_status="IN_PROGRESS", phone="+27110000000")
    del contact["properties"]["city"]
    reads, upserts = fake.count("/batch/read"), fake.count("/batch/upsert")
    updated = [record(mapping, n, delivery_id=10 + n, event="lead.updated", known=True, score=95, score_tier="warm",
                      phone="083 999 0000", suburb="Rosebank") for n in (1, 2)]
    assert all(o.ok and o.created is False for o in hubspot.send(updated))
    assert fake.count("/batch/read") - reads == 1 and fake.count("/batch/upsert") - upserts == 1
    props = contact["properties"]
    assert props["leaditio_score"] == "95" and props["leaditio_tier"] == "warm"
    assert props["lifecyclestage"] == "opportunity" and props["hs_lead_status"] == "IN_PROGRESS"
    assert props["phone"] == "+27110000000"  # sales' number stays
    assert props["city"] == "Rosebank"  # was empty: filled
    untouched = fake.find("leaditio_lead_id", "leaditio:lead_00002")["properties"]
    assert untouched["phone"] == "+27823456789" and untouched["city"] == "Sandton"


def test_by_email_an_existing_contact_keeps_its_stage(server: str, token: str, fake: FakeHubSpot,
                                                      mapping: Mapping) -> None:
    hubspot = destination(server, token, id_property="email")
    hubspot.setup(mapping)
    existing = fake.add_contact({"email": "lead1@example.com", "lifecyclestage": "customer", "firstname": "Sipho"})
    outcomes = by_id(hubspot.send([record(mapping, 1), record(mapping, 2)]))
    assert outcomes[1].ok and outcomes[1].created is False and outcomes[1].crm_id == existing
    props = fake.contacts[existing]["properties"]
    assert props["lifecyclestage"] == "customer" and props["firstname"] == "Sipho"  # not a new lead: kept
    assert props["leaditio_tier"] == "hot"
    assert fake.find("email", "lead2@example.com")["properties"]["lifecyclestage"] == "lead"


def test_by_email_missing_and_duplicate_keys_are_sorted_out_before_sending(server: str, token: str,
                                                                           fake: FakeHubSpot, mapping: Mapping) -> None:
    hubspot = destination(server, token, id_property="email")
    hubspot.setup(mapping)
    outcomes = by_id(hubspot.send([record(mapping, 1), record(mapping, 2, email=None),
                                   record(mapping, 3, email="LEAD1@example.com ")]))
    assert outcomes[1].ok
    assert isinstance(outcomes[2].error, Permanent) and outcomes[2].error.code == "missing_id"
    assert isinstance(outcomes[3].error, Retryable) and outcomes[3].error.code == "DUPLICATE_ID_IN_BATCH"
    assert len(fake.bodies[-1]["inputs"]) == 1


# --- per-record failures ------------------------------------------------------------------------
def test_multi_status_fails_only_the_bad_record(hubspot: HubSpotDestination, fake: FakeHubSpot,
                                                mapping: Mapping) -> None:
    outcomes = by_id(hubspot.send([record(mapping, n, **({"email": "thabo@gmail"} if n == 3 else {}))
                                   for n in range(1, 6)]))
    assert [n for n, o in outcomes.items() if o.ok] == [1, 2, 4, 5]
    error = outcomes[3].error
    assert isinstance(error, Permanent) and error.code == "INVALID_EMAIL" and error.field == "email"
    assert "Email address t***@gmail is invalid" in error.message  # HubSpot's words, the address masked
    assert fake.count("/batch/upsert", 207) == 1
    for n in (1, 2, 4, 5):  # the accepted ones carry their own contact id, though results come shuffled
        assert outcomes[n].crm_id == fake.find("leaditio_lead_id", f"leaditio:lead_{n:05d}")["id"]


def test_whole_batch_400_isolates_the_bad_record_and_resends_the_rest(server: str, token: str, fake: FakeHubSpot,
                                                                      mapping: Mapping) -> None:
    fake.multi_status = False
    hubspot = destination(server, token)
    hubspot.setup(mapping)
    before = fake.count("/batch/upsert")
    outcomes = by_id(hubspot.send([record(mapping, n, **({"email": "no-at-sign"} if n == 7 else {}))
                                   for n in range(1, 21)]))
    assert isinstance(outcomes[7].error, Permanent) and outcomes[7].error.code == "INVALID_EMAIL"
    assert all(o.ok for n, o in outcomes.items() if n != 7)
    assert fake.count("/batch/upsert") - before == 2  # the refused batch, then the 19 others
    assert len(fake.contacts) == 19


def test_an_unattributable_refusal_is_halved_until_the_culprit_stands_alone(server: str, token: str,
                                                                            fake: FakeHubSpot,
                                                                            mapping: Mapping) -> None:
    fake.multi_status = False
    hubspot = destination(server, token)
    hubspot.setup(mapping)
    other = fake.add_contact({"email": "lead5@example.com"})  # the same person, sent by another lead id
    outcomes = by_id(hubspot.send([record(mapping, n) for n in range(1, 17)]))
    error = outcomes[5].error
    assert isinstance(error, Permanent) and error.status == 409
    assert f"Existing ID: {other}" in error.message and "id_property: email" in error.message
    assert all(o.ok for n, o in outcomes.items() if n != 5)
    assert len(fake.contacts) == 16


def test_a_property_hubspot_lacks_is_a_config_problem(server: str, token: str, fake: FakeHubSpot,
                                                      mapping: Mapping, tmp_path: Path) -> None:
    hubspot = destination(server, token)
    hubspot.setup(mapping)
    records = [record(mapping, n) for n in (1, 2)]
    for r in records:
        r.values["leaditio_colour"] = "blue"
    outcomes = hubspot.send(records)  # multi-status: per record
    assert all(isinstance(o.error, ConfigProblem) and o.error.code == "PROPERTY_DOESNT_EXIST" for o in outcomes)
    fake.multi_status = False
    with pytest.raises(ConfigProblem) as caught:  # whole batch refused: nothing is any lead's fault
        hubspot.send(records)
    assert "leaditio_colour" in caught.value.message


def test_a_request_hubspot_refuses_as_a_whole_is_not_blamed_on_the_leads(server: str, token: str,
                                                                          fake: FakeHubSpot) -> None:
    hubspot = destination(server, token, id_property="email", object="contactz")
    before = fake.count("/batch/upsert")
    with pytest.raises(ConfigProblem) as caught:
        hubspot.send([plain(n) for n in range(1, 9)])
    assert "Unable to infer object type from: contactz" in caught.value.message
    assert fake.count("/batch/upsert") - before == 1  # not halved lead by lead


def test_a_non_unique_id_property_is_a_config_problem(server: str, token: str, mapping: Mapping) -> None:
    hubspot = destination(server, token, id_property="firstname")
    with pytest.raises(ConfigProblem) as caught:
        hubspot.send([record(mapping, 1)])
    assert caught.value.code == "NON_UNIQUE_ID_PROPERTY" and "non-unique 0-1 property firstname" in caught.value.message


# --- credentials --------------------------------------------------------------------------------
def test_a_bad_or_revoked_token_is_a_config_problem(server: str, token: str, fake: FakeHubSpot,
                                                    mapping: Mapping) -> None:
    with pytest.raises(ConfigProblem) as caught:
        destination(server, "pat-na1-not-ours").send([record(mapping, 1)])
    assert caught.value.status == 401
    fake.revoke(token)
    with pytest.raises(ConfigProblem) as caught:
        destination(server, token).send([record(mapping, 1)])
    assert "expired" in caught.value.message
    with pytest.raises(ConfigProblem) as caught:
        destination(server, "").send([record(mapping, 1)])
    assert caught.value.code == "no_token"


def test_a_token_without_the_write_scope_is_a_config_problem(server: str, token: str, fake: FakeHubSpot,
                                                             mapping: Mapping) -> None:
    fake.limit_scopes(token, {"crm.objects.contacts.read"})
    with pytest.raises(ConfigProblem) as caught:
        destination(server, token, id_property="email").send([record(mapping, 1)])
    assert caught.value.status == 403 and caught.value.code == "MISSING_SCOPES"
    assert "crm.schemas.contacts.read/write" in caught.value.message


# --- transient trouble and rate limits --------------------------------------------------------------
def test_server_errors_and_network_failures_are_retryable(hubspot: HubSpotDestination, fake: FakeHubSpot,
                                                          mapping: Mapping, token: str) -> None:
    fake.fail_next(502)
    with pytest.raises(Retryable) as caught:
        hubspot.send([record(mapping, 1)])
    assert caught.value.status == 502 and not isinstance(caught.value, RateLimited)
    with pytest.raises(Retryable) as caught:
        destination("http://127.0.0.1:9", token).send([record(mapping, 1)])
    assert caught.value.code == "network"


def test_a_slow_answer_times_out_as_retryable(server: str, token: str, fake: FakeHubSpot, mapping: Mapping) -> None:
    hubspot = destination(server, token, id_property="email", timeout=0.3)
    fake.delay = 1.0
    with pytest.raises(Retryable) as caught:
        hubspot.send([plain(1)])
    assert caught.value.code == "network"


def test_the_budget_learns_hubspots_limit_from_its_headers_and_says_wait_before_any_429(
        token: str, mapping: Mapping) -> None:
    fake = FakeHubSpot(tokens=(token,), max_per_interval=1, interval_ms=400)
    with hubspot_server(fake) as (_, url, _ca):
        hubspot = destination(url, token, id_property="email", match_existing=False, rate_window=0.4)
        assert hubspot.send([plain(1)])[0].ok  # answered with X-HubSpot-RateLimit-Max: 1, -Remaining: 0
        calls = len(fake.calls)
        with pytest.raises(Paced) as caught:  # nothing sent: the worker rests and gives the lead back
            hubspot.send([plain(2)])
        assert len(fake.calls) == calls and 0 < caught.value.retry_after <= 0.6
        time.sleep(caught.value.retry_after)
        assert hubspot.send([plain(2)])[0].ok
    assert fake.rate_limited == 0


def test_a_429_holds_every_process_using_the_token_and_goes_to_the_worker(token: str, mapping: Mapping) -> None:
    # HubSpot's 429 body (developers.hubspot.com/docs/api/usage-details, "Error responses"): no Retry-After.
    body = {"status": "error", "message": "You have reached your ten_secondly_rolling limit.",
            "errorType": "RATE_LIMIT", "correlationId": str(uuid.uuid4()), "policyName": "TEN_SECONDLY_ROLLING",
            "groupName": "publicapi:private-app:1234"}
    fake = FakeHubSpot(tokens=(token,))
    with hubspot_server(fake) as (_, url, _ca):
        fake.fail_next(429, body=body)
        hubspot = destination(url, token, id_property="email", match_existing=False)
        with pytest.raises(RateLimited) as caught:
            hubspot.send([plain(1)])
        assert not isinstance(caught.value, Paced) and not caught.value.pause_destination
        assert caught.value.code == "TEN_SECONDLY_ROLLING" and caught.value.retry_after == 1.0
        with pytest.raises(Paced):  # another worker with the same token: held too, nothing sent
            destination(url, token, id_property="email", match_existing=False).send([plain(2)])
    assert fake.count("/batch/upsert") == 1


def test_daily_limit_pauses_the_destination_until_midnight(token: str, mapping: Mapping) -> None:
    fake = FakeHubSpot(tokens=(token,), daily_limit=1)
    with hubspot_server(fake) as (_, url, _ca):
        hubspot = destination(url, token, id_property="email")
        assert hubspot.send([plain(1)])[0].ok
        with pytest.raises(RateLimited) as caught:
            hubspot.send([plain(2)])
        error = caught.value
        assert error.pause_destination and error.code == "DAILY"
        assert 0 < error.retry_after <= 86_400 + 3600
        calls = len(fake.calls)
        with pytest.raises(RateLimited):  # the quota is known spent: no more requests today
            destination(url, token, id_property="email").send([plain(3)])
        assert len(fake.calls) == calls


def test_our_own_daily_limit_stops_before_hubspot_does(server: str, token: str, fake: FakeHubSpot,
                                                       mapping: Mapping) -> None:
    hubspot = destination(server, token, id_property="email", daily_limit=2)
    hubspot.send([plain(1)])
    hubspot.send([plain(2)])
    with pytest.raises(RateLimited) as caught:
        hubspot.send([plain(3)])
    assert caught.value.pause_destination and fake.count("/batch/upsert") == 2


def test_one_budget_per_token_is_shared_by_every_worker_thread(token: str, mapping: Mapping) -> None:
    # Time is scaled down 20x (0.5 s windows for HubSpot's 10 s). The fake's window is shorter still, so a
    # request that reaches it late (the fake shares this process and its GIL) is not taken for a burst.
    # Four unshared budgets would send 20 requests in the first window and collect a dozen 429s.
    fake = FakeHubSpot(tokens=(token,), max_per_interval=5, interval_ms=350)
    with hubspot_server(fake) as (_, url, _ca):
        errors: list[BaseException] = []

        def worker(thread: int) -> None:  # each worker thread builds its own destination, as the worker does
            hubspot = destination(url, token, id_property="email", requests_per_10s=5, rate_window=0.5)
            try:
                for n in range(5):
                    while True:
                        try:
                            assert hubspot.send([plain(thread * 10 + n)])[0].ok
                            break
                        except Paced as paced:  # what the worker does: rest, then again
                            time.sleep(paced.retry_after or 0.0)
            except BaseException as exc:  # noqa: BLE001 - reported below
                errors.append(exc)

        threads = [threading.Thread(target=worker, args=(t,)) for t in range(4)]
        started = time.monotonic()
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert not errors
        assert fake.rate_limited == 0 and fake.count("/batch/upsert", 200) == 20
        assert time.monotonic() - started >= 1.4  # 20 calls at 5 per 0.5 s


def test_tls_with_a_private_ca(token: str, mapping: Mapping, tmp_path: Path) -> None:
    with hubspot_server(FakeHubSpot(tokens=(token,)), tls=True, ca_dir=tmp_path) as (fake, url, ca):
        hubspot = destination(url, token, id_property="email", ca_bundle=ca)
        assert hubspot.send([plain(1)])[0].ok
        with pytest.raises(Retryable) as caught:  # without the CA: a TLS failure, retried later
            destination(url, f"{token}-x", id_property="email").send([plain(1)])
        assert caught.value.code == "network"


def test_messages_never_carry_contact_details() -> None:
    from connector.destinations.hubspot.errors import mask

    assert mask("Email address thabo.m@gmail.com is invalid") == "Email address t***@gmail.com is invalid"
    assert mask("phone +27823456789 or 082 345 6789") == "phone ***789 or ***789"
    assert mask("Contact already exists. Existing ID: 51234567890") == \
        "Contact already exists. Existing ID: 51234567890"


def test_values_become_hubspot_text() -> None:
    assert hubspot_value(True) == "true" and hubspot_value(150000.0) == "150000" and hubspot_value(1.5) == "1.5"
    assert hubspot_value(["a", "b"]) == "a;b" and hubspot_value(None) == "" and hubspot_value(87) == "87"


@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(st.tuples(st.integers(1, 60), st.booleans()), min_size=1, max_size=40, unique_by=lambda t: t[0]),
       st.integers(0, 2**16))
def test_any_batch_settles_each_lead_with_its_own_contact(server: str, token: str, fake: FakeHubSpot,
                                                          mapping: Mapping, batch: list[tuple[int, bool]],
                                                          seed: int) -> None:
    """Whatever mix of new and known leads, in whatever order HubSpot answers: one call, each lead settled
    with the contact that holds its lead id."""
    fake.contacts.clear()
    fake.random.seed(seed)
    dest = destination(server, token)
    dest.setup(mapping)
    known = [n for n, is_known in batch if is_known]
    if known:
        assert all(o.ok for o in dest.send([record(mapping, n) for n in known]))
    upserts = fake.count("/batch/upsert")
    outcomes = dest.send([record(mapping, n, delivery_id=1000 + n, known=n in known, event="lead.updated"
                                 if n in known else "lead.new", score=n) for n, _ in batch])
    assert fake.count("/batch/upsert") - upserts == 1
    for outcome in outcomes:
        n = outcome.delivery_id - 1000
        contact = fake.find("leaditio_lead_id", f"leaditio:lead_{n:05d}")
        assert outcome.ok and outcome.crm_id == contact["id"] and outcome.created is (n not in known)
        assert contact["properties"]["leaditio_score"] == str(n)
    dest.close()
