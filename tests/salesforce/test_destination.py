"""The Salesforce destination against a local HTTPS Salesforce, through the real simple-salesforce.

These tests use a ready session (auth: session); logins and session renewal are in
test_auth.py.
"""

from __future__ import annotations

from typing import Any

import pytest

from connector.errors import ConfigProblem, Permanent, RateLimited, Retryable, Skip
from connector.mapping import load_mapping
from connector.records import OutboundRecord, UpdatePolicy
from fakes.salesforce import FakeSalesforce
from tests.conftest import ROOT
from tests.salesforce.conftest import session_destination

MAPPING = load_mapping(ROOT / "mappings" / "salesforce.yaml")
EXT = "Leaditio_Lead_ID__c"


def lead(lead_id: str, **overrides: Any) -> dict[str, Any]:
    document = {"id": lead_id, "vertical": "solar", "first_name": "Thabo", "suburb": "Sandton",
                "province": "Gauteng", "score": 87, "score_tier": "hot", "service_type": "Solar 10kW",
                "budget_range": "R100,000–R150,000", "urgency": "asap", "phone": "082 345 6789",
                "email": "Thabo.M@example.com", "source": "leaditio", "event": "lead.new",
                "marketplace": "leaditio"}
    document.update(overrides)
    return document


def record(delivery_id: int, lead_id: str, *, known: bool = False, **overrides: Any) -> OutboundRecord:
    mapped = MAPPING.apply(lead(lead_id, **overrides))
    return OutboundRecord(delivery_id=delivery_id, lead_key=f"leaditio:{lead_id}", event_type="lead.new",
                          values=mapped.values, policies=mapped.policies, known=known)


def raw(delivery_id: int, key: str, values: dict[str, Any], known: bool = False,
        policies: dict[str, UpdatePolicy] | None = None) -> OutboundRecord:
    return OutboundRecord(delivery_id, f"leaditio:{key}", "lead.new", {EXT: key, **values}, policies or {},
                          known=known)


# --- the happy path -------------------------------------------------------------------------
def test_a_batch_is_one_collections_upsert_and_every_lead_lands_once(fake: FakeSalesforce) -> None:
    dest = session_destination(fake)
    outcomes = dest.send([record(i, f"lead_{i}") for i in range(1, 6)])

    assert [o.ok for o in outcomes] == [True] * 5
    assert all(o.created is True and o.crm_id.startswith("00Q") for o in outcomes)
    calls = fake.rest_calls()
    assert [(c["method"], c["path"]) for c in calls] == [
        ("PATCH", f"/services/data/v59.0/composite/sobjects/Lead/{EXT}")]
    leads = fake.leads()
    assert set(leads) == {f"lead_{i}" for i in range(1, 6)}
    first = leads["lead_1"]
    assert first["LastName"] == "[not provided]" and first["Company"] == "Thabo"
    assert first["Phone"] == "+27823456789" and first["Email"] == "thabo.m@example.com"
    assert first["Rating"] == "Hot" and first["Lead_Score__c"] == 87
    assert (first["Budget_Min__c"], first["Budget_Max__c"]) == (100000, 150000)
    assert dest.api_usage == (1, 15000)  # read from Sforce-Limit-Info

    again = dest.send([record(i, f"lead_{i}", known=True, score=40, score_tier="qualified") for i in (1, 2)])
    assert [o.created for o in again] == [False, False]
    assert [o.crm_id for o in again] == [o.crm_id for o in outcomes[:2]]
    assert len(fake.leads()) == 5
    assert fake.leads()["lead_1"]["Rating"] == "Cold"


def test_one_lead_is_a_plain_upsert_with_the_external_id_url_encoded(fake: FakeSalesforce) -> None:
    dest = session_destination(fake)
    outcome, = dest.send([record(7, "lead/7 a&b")])
    assert outcome.ok and outcome.created is True
    call, = fake.rest_calls()
    assert call["method"] == "PATCH"
    assert call["path"] == f"/services/data/v59.0/sobjects/Lead/{EXT}/lead/7 a&b"  # decoded by the server
    assert "lead/7 a&b" in fake.leads()
    assert EXT.encode() not in call["body"]  # the key travels in the URL, never in the body

    outcome2, = dest.send([record(7, "lead/7 a&b", known=True)])
    assert outcome2.created is False and outcome2.crm_id == outcome.crm_id
    assert len(fake.leads()) == 1


def test_the_raw_path_is_percent_encoded(fake: FakeSalesforce) -> None:
    """What went on the wire, not what the server decoded."""
    session_destination(fake).send([record(1, "a/b c")])
    assert fake.rest_calls()[-1]["raw_uri"].endswith(f"/sobjects/Lead/{EXT}/a%2Fb%20c")


# --- update policies ----------------------------------------------------------------------
def test_updates_keep_sales_owned_fields_and_fill_only_empty_contact_fields(fake: FakeSalesforce) -> None:
    dest = session_destination(fake)
    dest.send([record(1, "lead_1", phone=None)])
    crm_id = fake.leads()["lead_1"]["Id"]
    # the sales team works the lead: new status, a corrected email; the phone is still empty
    fake.records["Lead"][crm_id].update(Status="Working - Contacted", Email="thabo@work.example", LeadSource="Web")
    before = len(fake.rest_calls())

    outcome, = dest.send([record(2, "lead_1", known=True, score=55, score_tier="warm")])

    assert outcome.ok and outcome.created is False
    now = fake.leads()["lead_1"]
    assert now["Status"] == "Working - Contacted" and now["LeadSource"] == "Web"  # on_create: untouched
    assert now["Email"] == "thabo@work.example"  # if_empty: the rep's value stays
    assert now["Phone"] == "+27823456789"  # if_empty: was empty, now filled
    assert now["Rating"] == "Warm" and now["Lead_Score__c"] == 55  # always
    calls = fake.rest_calls()[before:]
    assert [c["method"] for c in calls] == ["GET", "PATCH"]  # one query for the batch, then the upsert
    assert "query" in calls[0]["path"]


def test_no_read_before_write_for_new_leads_or_mappings_without_if_empty(fake: FakeSalesforce) -> None:
    dest = session_destination(fake)
    dest.send([record(1, "lead_1"), record(2, "lead_2")])
    always = {"Rating": UpdatePolicy.always, "LastName": UpdatePolicy.on_create}
    dest.send([raw(3, "lead_1", {"Rating": "Cold", "LastName": "X"}, known=True, policies=always),
               raw(4, "lead_2", {"Rating": "Cold", "LastName": "Y"}, known=True, policies=always)])
    assert [c["method"] for c in fake.rest_calls()] == ["PATCH", "PATCH"]
    assert fake.leads()["lead_1"]["LastName"] == "[not provided]"  # on_create not re-sent


def test_a_known_lead_deleted_in_salesforce_is_created_again(fake: FakeSalesforce) -> None:
    dest = session_destination(fake)
    policies = {"LastName": UpdatePolicy.on_create, "Company": UpdatePolicy.on_create,
                "Rating": UpdatePolicy.always}
    outcomes = dest.send([raw(1, "gone", {"LastName": "M", "Company": "C", "Rating": "Hot"}, known=True,
                              policies=policies),
                          raw(2, "new", {"LastName": "N", "Company": "D", "Rating": "Warm"}, policies=policies)])
    assert [o.ok for o in outcomes] == [True, True]
    assert fake.leads()["gone"]["LastName"] == "M"
    # the new lead (assignment on), the known one (assignment off), then it again with every field as a create
    calls = fake.rest_calls()
    assert [c["headers"].get("Sforce-Auto-Assign") for c in calls] == ["TRUE", "FALSE", "TRUE"]


# --- assignment rules: on creates only --------------------------------------------------------
RULE, OTHER_RULE = "01Q5g000000RULEAAA", "01Q5g000000OTHRAAA"
QUEUE, REP, OTHER_QUEUE = "00G5g000000QUEUEA", "0055g000000REPAAA", "00G5g000000OTHERA"


def test_assignment_rules_run_on_new_leads_and_never_on_updates(fake: FakeSalesforce) -> None:
    fake.assignment_rules.update({RULE: QUEUE})
    fake.active_rule = RULE
    dest = session_destination(fake)
    assert all(o.ok for o in dest.send([record(i, f"lead_{i}") for i in (1, 2)]))
    assert {lead["OwnerId"] for lead in fake.leads().values()} == {QUEUE}
    for lead in fake.records["Lead"].values():
        lead["OwnerId"] = REP  # a rep takes them
    rescored = [record(10 + i, f"lead_{i}", known=True, score=40, score_tier="warm") for i in (1, 2)]
    assert all(o.ok for o in dest.send(rescored)) and all(o.ok for o in dest.send(rescored[:1]))
    leads = fake.leads()
    assert {lead["OwnerId"] for lead in leads.values()} == {REP} and leads["lead_1"]["Rating"] == "Warm"
    headers = [c["headers"].get("Sforce-Auto-Assign") for c in fake.rest_calls() if c["method"] == "PATCH"]
    assert headers == ["TRUE", "FALSE", "FALSE"]


def test_a_chosen_assignment_rule_id_is_sent_on_creates(fake: FakeSalesforce) -> None:
    fake.assignment_rules.update({RULE: QUEUE, OTHER_RULE: OTHER_QUEUE})
    fake.active_rule = RULE
    dest = session_destination(fake, assignment_rule_id=OTHER_RULE)
    dest.send([record(1, "lead_1")])
    dest.send([record(2, "lead_1", known=True, score=10)])
    assert fake.leads()["lead_1"]["OwnerId"] == OTHER_QUEUE
    assert [c["headers"].get("Sforce-Auto-Assign") for c in fake.rest_calls() if c["method"] == "PATCH"] == [OTHER_RULE, "FALSE"]


def test_assignment_rules_off_means_off_everywhere(fake: FakeSalesforce) -> None:
    fake.assignment_rules.update({RULE: QUEUE})
    fake.active_rule = RULE
    dest = session_destination(fake, assignment_rules=False)
    dest.send([record(1, "lead_1"), record(2, "lead_2")])
    assert {lead["OwnerId"] for lead in fake.leads().values()} != {QUEUE}
    assert {c["headers"].get("Sforce-Auto-Assign") for c in fake.rest_calls()} == {"FALSE"}


@pytest.mark.parametrize(("settings", "problem"), [
    ({"assignment_rule_id": "00Q5g000000RULEAAA"}, "starting with 01Q"),
    ({"assignment_rule_id": RULE, "assignment_rules": False}, "remove one of them"),
])
def test_assignment_settings_mistakes_are_explained(settings: dict[str, Any], problem: str) -> None:
    from pydantic import ValidationError

    from connector.destinations.salesforce import Settings

    with pytest.raises(ValidationError, match=problem):
        Settings(auth="session", instance_url="https://acme.my.salesforce.com", session_id="x", **settings)


# --- per-record errors ---------------------------------------------------------------------
def test_only_the_refused_records_fail_each_with_salesforce_words_and_field(fake: FakeSalesforce) -> None:
    dest = session_destination(fake)
    good = raw(1, "ok", {"LastName": "A", "Company": "B"})
    no_company = raw(2, "nocomp", {"LastName": "A"})
    bad_rating = raw(3, "rating", {"LastName": "A", "Company": "B", "Rating": "Scorching"})
    too_long = raw(4, "long", {"LastName": "A" * 81, "Company": "B"})
    outcomes = {o.delivery_id: o for o in dest.send([good, no_company, bad_rating, too_long])}

    assert outcomes[1].ok
    for delivery_id, code, field, words in [
        (2, "REQUIRED_FIELD_MISSING", "Company", "Required fields are missing: [Company]"),
        (3, "INVALID_OR_NULL_FOR_RESTRICTED_PICKLIST", "Rating", "bad value for restricted picklist field"),
        (4, "STRING_TOO_LONG", "LastName", "data value too large"),
    ]:
        error = outcomes[delivery_id].error
        assert isinstance(error, Permanent) and not isinstance(error, Skip)
        assert (error.code, error.field) == (code, field)
        assert words in error.message and field in error.describe()
    assert len(fake.rest_calls()) == 1


def test_a_locked_row_is_retried_not_dead_lettered(fake: FakeSalesforce) -> None:
    fake.locked["busy"] = 1
    outcomes = session_destination(fake).send([raw(1, "busy", {"LastName": "A", "Company": "B"}),
                                       raw(2, "free", {"LastName": "A", "Company": "B"})])
    assert type(outcomes[0].error) is Retryable and outcomes[0].error.code == "UNABLE_TO_LOCK_ROW"
    assert outcomes[1].ok


def test_a_trigger_that_hit_a_locked_row_is_retried_too(fake: FakeSalesforce) -> None:
    fake.trigger_locked.add("busy")
    outcome, = session_destination(fake).send([raw(1, "busy", {"LastName": "A", "Company": "B"})])
    assert type(outcome.error) is Retryable and outcome.error.code == "UNABLE_TO_LOCK_ROW"
    assert "LeadTrigger" in outcome.error.message


def test_one_unparseable_value_does_not_sink_the_batch(fake: FakeSalesforce) -> None:
    """Salesforce refuses the whole request for text in a number field; the batch is halved to find it."""
    dest = session_destination(fake)
    batch = [raw(i, f"l{i}", {"LastName": "A", "Company": "B", "Lead_Score__c": 5}) for i in range(1, 8)]
    batch[4].values["Lead_Score__c"] = "high"
    outcomes = {o.delivery_id: o for o in dest.send(batch)}
    assert [i for i, o in outcomes.items() if o.ok] == [1, 2, 3, 4, 6, 7]
    error = outcomes[5].error
    assert isinstance(error, Permanent) and error.code == "JSON_PARSER_ERROR" and "high" in error.message
    assert len(fake.leads()) == 6


def test_a_batch_where_every_value_is_unparseable_costs_a_bounded_number_of_calls(fake: FakeSalesforce) -> None:
    batch = [raw(i, f"l{i}", {"LastName": "A", "Company": "B", "Lead_Score__c": "high"}) for i in range(200)]
    outcomes = session_destination(fake).send(batch)
    assert all(o.error is not None and o.error.code == "JSON_PARSER_ERROR" for o in outcomes)
    assert len(outcomes) == 200 and len(fake.rest_calls()) <= 17


@pytest.mark.parametrize("mode", ["dead_letter", "allow_save"])
def test_duplicate_rule_alert(fake: FakeSalesforce, mode: str) -> None:
    fake.duplicate_rule = "alert"
    twin = fake.add_record("Lead", LastName="M", Company="C", Email="thabo.m@example.com")
    outcome, = session_destination(fake, on_duplicate=mode).send([record(1, "lead_1")])
    if mode == "allow_save":
        assert outcome.ok and fake.rest_calls()[0]["headers"]["Sforce-Duplicate-Rule-Header"] == "allowSave=true"
    else:
        assert isinstance(outcome.error, Permanent) and outcome.error.code == "DUPLICATES_DETECTED"
        assert twin in outcome.error.message and "allow_save" in outcome.error.message


def test_duplicate_rule_that_blocks_is_dead_lettered_even_with_allow_save(fake: FakeSalesforce) -> None:
    fake.duplicate_rule = "block"
    twin = fake.add_record("Lead", LastName="M", Company="C", Email="thabo.m@example.com")
    outcomes = session_destination(fake, on_duplicate="allow_save").send([record(1, "lead_1"), record(2, "lead_2",
                                                                                              email="x@y.example")])
    assert outcomes[0].error.code == "DUPLICATES_DETECTED" and twin in outcomes[0].error.message
    assert "blocks" in outcomes[0].error.message
    assert outcomes[1].ok


def test_converted_lead_is_skipped_and_recorded(fake: FakeSalesforce) -> None:
    dest = session_destination(fake)
    dest.send([record(1, "lead_1")])
    fake.convert("lead_1")
    outcome, = dest.send([record(2, "lead_1", known=True, score=12)])
    assert isinstance(outcome.error, Skip) and outcome.error.code == "CANNOT_UPDATE_CONVERTED_LEAD"
    assert "converted" in outcome.error.message


def test_converted_lead_can_update_its_contact_instead(fake: FakeSalesforce) -> None:
    dest = session_destination(fake, on_converted="update_contact")
    dest.send([record(1, "lead_1"), record(2, "lead_2")])
    contact_id = fake.convert("lead_1")
    outcomes = dest.send([record(3, "lead_1", known=True, score=12), record(4, "lead_2", known=True, score=13)])
    assert [o.ok for o in outcomes] == [True, True]
    assert outcomes[0].crm_id == contact_id and outcomes[0].created is False
    contact = fake.records["Contact"][contact_id]
    assert contact["Lead_Score__c"] == 12  # the always field that exists on Contact
    assert "Rating" not in contact  # no such field on Contact
    assert fake.leads()["lead_2"]["Lead_Score__c"] == 13


def test_several_records_with_one_external_id_are_named(fake: FakeSalesforce) -> None:
    first = fake.add_record("Lead", LastName="A", Company="B", **{EXT: "twin"})
    second = fake.add_record("Lead", LastName="A", Company="B", **{EXT: "twin"})
    dest = session_destination(fake)
    single, = dest.send([record(1, "twin")])
    assert isinstance(single.error, Permanent) and single.error.code == "DUPLICATE_EXTERNAL_ID"
    assert first in single.error.message and second in single.error.message
    batch = dest.send([record(2, "twin"), record(3, "other")])
    assert batch[0].error.code == "DUPLICATE_EXTERNAL_ID" and first in batch[0].error.message
    assert batch[1].ok


# --- request-level errors: the whole batch, raised for the worker --------------------------
def test_daily_request_limit_pauses_the_destination(fake: FakeSalesforce) -> None:
    fake.api_limit = 0
    with pytest.raises(RateLimited) as caught:
        session_destination(fake).send([record(1, "a"), record(2, "b")])
    assert caught.value.pause_destination and caught.value.code == "REQUEST_LIMIT_EXCEEDED"


@pytest.mark.parametrize("status,code", [(503, "SERVER_UNAVAILABLE"), (500, "UNKNOWN_EXCEPTION"), (502, "X")])
def test_server_errors_are_retryable(fake: FakeSalesforce, status: int, code: str) -> None:
    fake.fail_next(status, code)
    with pytest.raises(Retryable) as caught:
        session_destination(fake).send([record(1, "a"), record(2, "b")])
    assert not isinstance(caught.value, RateLimited)
    assert fake.leads() == {}


def test_a_slow_salesforce_times_out_and_is_retried_later(fake: FakeSalesforce) -> None:
    fake.delay = 0.6
    with pytest.raises(Retryable) as caught:
        session_destination(fake, timeout=0.2).send([record(1, "a")])
    assert caught.value.code == "network"


def test_a_mapped_field_that_does_not_exist_is_a_config_problem(fake: FakeSalesforce) -> None:
    with pytest.raises(ConfigProblem) as caught:
        session_destination(fake).send([raw(1, "a", {"LastName": "A", "Company": "B", "Score__c": 1}),
                                raw(2, "b", {"LastName": "A", "Company": "B"})])
    assert caught.value.code == "INVALID_FIELD" and "Score__c" in caught.value.message
    with pytest.raises(ConfigProblem):
        session_destination(fake).send([raw(1, "a", {"LastName": "A", "Company": "B", "Score__c": 1})])


def test_wrong_external_id_field_is_a_config_problem(fake: FakeSalesforce) -> None:
    with pytest.raises(ConfigProblem) as caught:
        session_destination(fake, external_id_field="LeadId__c").send([record(1, "a"), record(2, "b")])
    assert caught.value.code in ("NOT_FOUND", "INVALID_FIELD") and "LeadId__c" in caught.value.message
    with pytest.raises(ConfigProblem) as caught:
        session_destination(fake, external_id_field="LeadId__c").send([record(1, "a")])
    assert caught.value.code == "NOT_FOUND" and "External ID field LeadId__c" in caught.value.message


def test_an_expired_ready_session_is_a_config_problem_without_looping(fake: FakeSalesforce) -> None:
    dest = session_destination(fake)
    fake.expire_sessions()
    with pytest.raises(ConfigProblem) as caught:
        dest.send([record(1, "a")])
    assert caught.value.code == "INVALID_SESSION_ID" and "session_id" in caught.value.message
    assert len(fake.requests) == 1


def test_assignment_rules_can_be_switched_off(fake: FakeSalesforce) -> None:
    session_destination(fake, assignment_rules=False).send([record(1, "a"), record(2, "b")])
    assert fake.rest_calls()[0]["headers"]["Sforce-Auto-Assign"] == "FALSE"


# --- the org's daily API allowance, shared by every process (connector.pacing) ---------------------
def test_the_orgs_allowance_pauses_delivery_before_salesforce_refuses_and_is_shared(fake: FakeSalesforce) -> None:
    fake.api_calls, fake.api_limit = 9_990, 10_000  # other integrations used most of today's allowance
    dest = session_destination(fake)
    sent = 0
    with pytest.raises(RateLimited) as caught:
        while sent < 20:
            assert dest.send([record(sent + 1, f"lead_{sent}")])[0].ok
            sent += 1
    assert sent == 10 and fake.api_calls == 10_000  # to the last request the org had, never past it
    assert caught.value.pause_destination and caught.value.code == "api_budget"
    assert all("REQUEST_LIMIT_EXCEEDED" not in str(r) for r in fake.requests)
    calls = fake.api_calls
    with pytest.raises(RateLimited):  # another worker delivering to the same org: the same budget
        session_destination(fake).send([record(99, "lead_99")])
    assert fake.api_calls == calls


def test_leads_a_backfill_found_leave_a_fifth_of_the_allowance_to_live_ones(fake: FakeSalesforce) -> None:
    fake.api_calls, fake.api_limit = 70, 100
    dest = session_destination(fake)
    assert dest.send([record(1, "lead_1")])[0].ok  # learns the allowance: 71 of 100 used
    background = [OutboundRecord(r.delivery_id, r.lead_key, r.event_type, r.values, r.policies, background=True)
                  for r in (record(n, f"lead_{n}") for n in range(2, 30))]
    delivered = 0
    with pytest.raises(RateLimited):
        for item in background:
            assert dest.send([item])[0].ok
            delivered += 1
    assert fake.api_calls == 80  # 80% of 100: the backfill's share
    assert dest.send([record(50, "lead_50")])[0].ok  # a webhook's lead still goes
