"""The speed-to-lead notice's link to a Salesforce record: the Lightning page on the org the client is
logged in to (https://<instance>/lightning/r/<object>/<id>/view), with no call to Salesforce."""

from __future__ import annotations

from urllib.parse import urlsplit

from connector.records import OutboundRecord, UpdatePolicy
from fakes.salesforce import FakeSalesforce
from tests.salesforce.conftest import session_destination


def test_a_delivered_lead_links_to_its_lightning_record_page(fake: FakeSalesforce) -> None:
    destination = session_destination(fake)
    record = OutboundRecord(delivery_id=1, lead_key="leaditio:lead_link", event_type="lead.new",
                            values={"LastName": "M", "Company": "C", "Leaditio_Lead_ID__c": "lead_link"},
                            policies={"LastName": UpdatePolicy.always})
    (outcome,) = destination.send([record])
    assert outcome.ok and outcome.crm_id
    calls = len(fake.rest_calls())
    host = urlsplit(fake.url).netloc
    assert destination.record_url(outcome.crm_id) == f"https://{host}/lightning/r/Lead/{outcome.crm_id}/view"
    assert len(fake.rest_calls()) == calls
    destination.close()


def test_before_any_login_the_configured_instance_is_used(fake: FakeSalesforce) -> None:
    destination = session_destination(fake, object="Contact")
    assert destination.record_url("003ABC") == f"{fake.url.rstrip('/')}/lightning/r/Contact/003ABC/view"
