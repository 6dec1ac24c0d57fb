"""Logging in to Salesforce four ways, renewing an expired session once, and failing as config.

simple-salesforce builds login URLs as https://<domain>.salesforce.com; the test-only `ToFake`
adapter mounted on the destination's session sends them to the local fake, which answers with
itself as the instance, so the real login code and the real REST calls both run.
"""

from __future__ import annotations

import base64
from pathlib import Path
from typing import Any

import pytest
import yaml
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from connector.config import load_config
from connector.destinations.salesforce import SalesforceDestination, Settings
from connector.destinations.salesforce.auth import http_session
from connector.errors import ConfigError, ConfigProblem, Retryable
from connector.records import OutboundRecord
from connector.runtime import Runtime
from fakes.salesforce import FakeSalesforce, ToFake

EXT = "Leaditio_Lead_ID__c"


def connect(fake: FakeSalesforce, **values: Any) -> SalesforceDestination:
    settings = Settings.model_validate(values)
    session = http_session(settings)
    session.mount("https://", ToFake(fake.url))
    return SalesforceDestination("crm", settings, session=session)


def lead(delivery_id: int = 1, key: str = "lead_1") -> OutboundRecord:
    return OutboundRecord(delivery_id, f"leaditio:{key}", "lead.new",
                          {EXT: key, "LastName": "[not provided]", "Company": "Thabo"}, {})


def password_settings(fake: FakeSalesforce, **extra: Any) -> dict[str, Any]:
    return {"auth": "password", "username": fake.username, "password": fake.password,
            "security_token": fake.security_token, **extra}


def logins(fake: FakeSalesforce) -> list[dict[str, Any]]:
    return [r for r in fake.requests if not r["path"].startswith("/services/data/")]


def test_username_password_and_security_token_use_soap_login(fake: FakeSalesforce) -> None:
    dest = connect(fake, **password_settings(fake))
    outcome, = dest.send([lead()])
    assert outcome.ok and "lead_1" in fake.leads()
    login, = logins(fake)
    assert login["path"] == "/services/Soap/u/59.0" and login["host"] == "login.salesforce.com"
    assert login["headers"]["Soapaction"] == "login"
    assert b"<n1:password>hunter2TOKEN123</n1:password>" in login["body"]


def test_a_sandbox_logs_in_at_test_salesforce_com(fake: FakeSalesforce) -> None:
    connect(fake, **password_settings(fake, domain="test")).send([lead()])
    assert logins(fake)[0]["host"] == "test.salesforce.com"


def test_password_with_a_connected_app_uses_the_oauth_password_flow(fake: FakeSalesforce) -> None:
    dest = connect(fake, **password_settings(fake, consumer_key=fake.consumer_key,
                                             consumer_secret=fake.consumer_secret))
    assert dest.send([lead()])[0].ok
    login, = logins(fake)
    assert login["path"] == "/services/oauth2/token" and b"grant_type=password" in login["body"]


def test_client_credentials_on_my_domain(fake: FakeSalesforce) -> None:
    dest = connect(fake, auth="client_credentials", consumer_key=fake.consumer_key,
                   consumer_secret=fake.consumer_secret, domain="https://acme.my.salesforce.com/")
    assert dest.settings.domain == "acme.my"
    assert dest.send([lead()])[0].ok
    login, = logins(fake)
    assert login["host"] == "acme.my.salesforce.com" and b"grant_type=client_credentials" in login["body"]
    expected = base64.b64encode(f"{fake.consumer_key}:{fake.consumer_secret}".encode()).decode()
    assert login["headers"]["Authorization"] == f"Basic {expected}"


def test_client_credentials_refuse_login_and_test_domains() -> None:
    with pytest.raises(ValueError, match="My Domain"):
        Settings.model_validate({"auth": "client_credentials", "consumer_key": "k", "consumer_secret": "s"})


def _rsa_pair() -> tuple[str, str]:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    private = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                serialization.NoEncryption()).decode()
    public = key.public_key().public_bytes(serialization.Encoding.PEM,
                                           serialization.PublicFormat.SubjectPublicKeyInfo).decode()
    return private, public


def test_jwt_bearer_with_the_private_key_from_an_env_var(fake: FakeSalesforce, tmp_path: Path) -> None:
    private, public = _rsa_pair()
    fake.jwt_public_key = public
    config_file = tmp_path / "config.yaml"
    config_file.write_text(yaml.safe_dump({
        "database": {"url": f"sqlite:///{tmp_path / 'c.db'}"},
        "sources": {"leaditio": {"marketplace": "leaditio", "secrets": ["${HOOK_SECRET}"]}},
        "destinations": {"sf": {"type": "salesforce", "auth": "jwt", "username": fake.username,
                                "consumer_key": fake.consumer_key, "private_key": "${SF_JWT_KEY}"}},
    }))
    # Platforms often keep a PEM on one line with literal \n: both spellings work.
    env = {"HOOK_SECRET": "whsec_salesforce_auth_test", "SF_JWT_KEY": private.replace("\n", "\\n")}
    settings = Runtime(load_config(config_file, env=env)).destination("sf").settings
    session = http_session(settings)
    session.mount("https://", ToFake(fake.url))
    dest = SalesforceDestination("sf", settings, session=session)
    assert dest.send([lead()])[0].ok
    login, = logins(fake)
    assert login["host"] == "login.salesforce.com"
    assert b"urn%3Aietf%3Aparams%3Aoauth%3Agrant-type%3Ajwt-bearer" in login["body"]


def test_jwt_with_a_key_salesforce_does_not_know_is_a_config_problem(fake: FakeSalesforce) -> None:
    fake.jwt_public_key = _rsa_pair()[1]
    dest = connect(fake, auth="jwt", username=fake.username, consumer_key=fake.consumer_key,
                   private_key=_rsa_pair()[0])
    with pytest.raises(ConfigProblem) as caught:
        dest.send([lead()])
    assert caught.value.code == "invalid_grant" and "certificate" in caught.value.message


def test_jwt_with_a_key_that_is_not_a_pem_is_a_config_problem(fake: FakeSalesforce) -> None:
    dest = connect(fake, auth="jwt", username=fake.username, consumer_key=fake.consumer_key,
                   private_key="not a key")
    with pytest.raises(ConfigProblem, match="private_key"):
        dest.send([lead()])
    assert fake.requests == []


def test_secrets_must_come_from_the_environment(tmp_path: Path) -> None:
    config_file = tmp_path / "config.yaml"
    config_file.write_text(yaml.safe_dump({
        "sources": {"leaditio": {"marketplace": "leaditio", "secrets": ["${HOOK_SECRET}"]}},
        "destinations": {"sf": {"type": "salesforce", "username": "u", "password": "plain-text"}},
    }))
    with pytest.raises(ConfigError, match="environment variables"):
        load_config(config_file, env={"HOOK_SECRET": "whsec_salesforce_auth_test"})


def test_an_expired_session_is_renewed_once_and_the_request_repeated(fake: FakeSalesforce) -> None:
    dest = connect(fake, **password_settings(fake))
    assert dest.send([lead(1, "a")])[0].ok
    fake.expire_sessions()
    outcomes = dest.send([lead(2, "b"), lead(3, "c")])
    assert [o.ok for o in outcomes] == [True, True]
    assert fake.logins == 2
    assert [r["path"].rsplit("/", 2)[-2] for r in fake.rest_calls()] == [EXT, "Lead", "Lead"]  # 401, then repeat
    assert set(fake.leads()) == {"a", "b", "c"}


def test_a_session_refused_even_after_renewal_is_a_config_problem_not_a_loop(fake: FakeSalesforce) -> None:
    dest = connect(fake, **password_settings(fake))
    fake.refuse_sessions = True
    with pytest.raises(ConfigProblem) as caught:
        dest.send([lead()])  # sf.Lead.upsert: the path where simple-salesforce itself would recurse
    assert caught.value.code == "INVALID_SESSION_ID"
    assert fake.logins == 2 and len(fake.rest_calls()) == 2


def test_a_wrong_password_is_a_config_problem_with_a_hint(fake: FakeSalesforce) -> None:
    dest = connect(fake, **password_settings(fake, password="wrong"))
    with pytest.raises(ConfigProblem) as caught:
        dest.send([lead()])
    error = caught.value
    assert error.code == "INVALID_LOGIN" and "security_token" in error.message
    assert "wrong" not in error.message and "hunter2" not in error.message  # no secrets in messages
    assert fake.rest_calls() == []


def test_wrong_client_credentials_are_a_config_problem(fake: FakeSalesforce) -> None:
    dest = connect(fake, auth="client_credentials", consumer_key=fake.consumer_key, consumer_secret="nope",
                   domain="acme.my")
    with pytest.raises(ConfigProblem) as caught:
        dest.send([lead()])
    assert caught.value.code == "invalid_client"


def test_login_while_salesforce_is_down_is_retryable(fake: FakeSalesforce) -> None:
    fake.login_down = True
    dest = connect(fake, **password_settings(fake))
    with pytest.raises(Retryable) as caught:
        dest.send([lead()])
    assert not isinstance(caught.value, ConfigProblem)
    fake.login_down = False
    assert dest.send([lead()])[0].ok


def test_settings_explain_what_each_auth_mode_needs() -> None:
    with pytest.raises(ValueError, match="needs username, password"):
        Settings.model_validate({"auth": "password"})
    with pytest.raises(ValueError, match="needs session_id, instance_url"):
        Settings.model_validate({"auth": "session"})
    with pytest.raises(ValueError, match="private_key"):
        Settings.model_validate({"auth": "jwt", "username": "u", "consumer_key": "k"})
    assert Settings.model_validate({"auth": "session", "session_id": "x", "instance_url": "https://a",
                                    "api_version": "v60.0", "timeout": "5s"}).api_version == "60.0"


def test_ca_bundle_setting_trusts_a_private_ca_when_no_env_var_overrides_it(
        fake: FakeSalesforce, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    ca_file = tmp_path / "private-ca.pem"
    fake.ca.cert_pem.write_to_path(str(ca_file))
    monkeypatch.delenv("REQUESTS_CA_BUNDLE", raising=False)
    monkeypatch.delenv("CURL_CA_BUNDLE", raising=False)
    dest = connect(fake, **password_settings(fake, ca_bundle=str(ca_file)))
    assert dest.send([lead()])[0].ok
    untrusting = connect(fake, **password_settings(fake))
    with pytest.raises(Retryable) as caught:
        untrusting.send([lead()])
    assert "SSL" in caught.value.message or "certificate" in caught.value.message.lower()
