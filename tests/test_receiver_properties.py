"""Properties of the receiver for every marketplace, over arbitrary bodies, headers and lengths:
never a 5xx, never an unsigned or wrongly signed body accepted, and valid webhooks sent in between
are still stored."""

from __future__ import annotations

import json

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from connector.config import load_config
from connector.runtime import Runtime
from connector.store import Store
from connector.web import create_app
from tests.conftest import leaditio_payload, write_config

SECRETS = {"leaditio": "whsec_property_leaditio", "leados": "whsec_property_leados_0",
           "leadnod": "whsec_property_leadnod_0"}
ENV = {f"{name.upper()}_SECRET": secret for name, secret in SECRETS.items()}

json_values = st.recursive(st.none() | st.booleans() | st.integers() | st.text(max_size=20),
                           lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner,
                                                                                       max_size=4),
                           max_leaves=20)
bodies = st.one_of(
    st.binary(max_size=600),
    json_values.map(lambda value: json.dumps(value).encode()),
    st.dictionaries(st.sampled_from(["event", "type", "lead", "data", "id", "timestamp", "contact"]), json_values,
                    max_size=6).map(lambda value: json.dumps(value).encode()),
    st.integers(1, 200_000).map(lambda depth: b'{"event": "lead.new", "lead": ' + b"[" * depth + b"]" * depth + b"}"),
    st.integers(1, 200_000).map(lambda depth: b"[" * depth),
)
header_names = st.sampled_from(["Content-Type", "Content-Encoding", "Transfer-Encoding", "X-Anything",
                                "Content-Length", "Expect"])
header_values = st.text(st.characters(min_codepoint=32, max_codepoint=126), max_size=40)


def setup(tmp_path, database_url):  # noqa: ANN201
    sources = {name: {"marketplace": name, "secrets": [f"${{{name.upper()}_SECRET}}"]} for name in SECRETS}
    path = write_config(tmp_path, database_url, sources=sources, server={"max_body_bytes": 4096},
                        routes=[{"source": name, "destination": "leads_file"} for name in SECRETS])
    config = load_config(path, env=ENV)
    store = Store(config.database.url)
    store.upgrade()
    return config, store


def test_arbitrary_requests_never_5xx_never_forge_and_valid_webhooks_still_land(tmp_path, database_url):
    config, store = setup(tmp_path, database_url)
    client = create_app(Runtime(config, store)).test_client()
    sent: list[str] = []

    @settings(max_examples=60, deadline=None, suppress_health_check=list(HealthCheck))
    @given(source=st.sampled_from(sorted(SECRETS)), body=bodies,
           signing=st.sampled_from(["right", "none", "wrong secret", "other body", "garbage"]),
           headers=st.dictionaries(header_names, header_values, max_size=3), valid=st.booleans())
    def check(source: str, body: bytes, signing: str, headers: dict[str, str], valid: bool) -> None:
        marketplace = Runtime(config).marketplaces[source]
        sent_headers = dict(headers)
        if signing == "right":
            sent_headers[marketplace.signature_header] = marketplace.sign(SECRETS[source], body)
        elif signing == "wrong secret":
            sent_headers[marketplace.signature_header] = marketplace.sign("whsec_not_the_right_one", body)
        elif signing == "other body":
            sent_headers[marketplace.signature_header] = marketplace.sign(SECRETS[source], body + b" ")
        elif signing == "garbage":
            sent_headers[marketplace.signature_header] = "sha256=" + "0" * 64
        answer = client.post(f"/webhooks/{source}", data=body, headers=sent_headers)
        assert answer.status_code < 500, answer.get_data()
        assert {"code", "message"} <= set(answer.get_json() or {}) or answer.status_code == 200
        if signing != "right":
            assert answer.status_code != 200, (signing, body[:80])
        if valid:  # a genuine Leaditio webhook right after: stored
            lead_id = f"lead_prop_{len(sent)}"
            good = json.dumps(leaditio_payload(lead_id)).encode()
            leaditio = Runtime(config).marketplaces["leaditio"]
            ok = client.post("/webhooks/leaditio", data=good, headers={
                "Content-Type": "application/json", leaditio.signature_header: leaditio.sign(SECRETS["leaditio"], good)})
            assert ok.status_code == 200 and ok.get_json()["status"] == "accepted", ok.get_data()
            sent.append(lead_id)

    try:
        check()
        stored = {row["lead_key"] for row in store.deliveries_query(limit=100_000)}
        assert {f"leaditio:{lead_id}" for lead_id in sent} <= stored
    finally:
        store.dispose()
