"""A Salesforce destination's settings: how we log in, which object leads become, what a duplicate
or a converted lead means. Checked at start-up like the rest of the config file."""

from __future__ import annotations

import re
from typing import Any, Literal

from pydantic import Field, SecretStr, field_validator, model_validator

from connector.destinations.base import DestinationSettings
from connector.durations import seconds

REMOTE = "salesforce"
COLLECTION_LIMIT = 200
SPLIT_CALLS = 16  # extra calls to find the bad records of a refused batch: ~2 bad ones in 200


class Settings(DestinationSettings):
    auth: Literal["password", "client_credentials", "jwt", "session"] = Field(
        default="password", description="password: username + password + security_token (SOAP login, or OAuth "
                                        "when consumer_key/secret are set); client_credentials: connected app on "
                                        "your My Domain; jwt: connected app certificate; session: a ready session")
    username: str | None = Field(default=None, description="the integration user (password and jwt)")
    password: SecretStr | None = Field(default=None, description="${ENV_VAR}")
    security_token: SecretStr | None = Field(default=None, description="${ENV_VAR}; empty for IP-allow-listed users")
    consumer_key: str | None = Field(default=None, description="the connected app's Consumer Key")
    consumer_secret: SecretStr | None = Field(default=None, description="${ENV_VAR}")
    private_key: SecretStr | None = Field(default=None, description="${ENV_VAR} holding the PEM of the JWT key")
    domain: str = Field(default="login", description="login, test (sandbox) or your My Domain, e.g. acme.my")
    instance_url: str | None = Field(default=None, description="https://acme.my.salesforce.com (session auth)")
    session_id: SecretStr | None = Field(default=None, description="${ENV_VAR} (session auth)")
    object: str = Field(default="Lead", description="the sObject leads become")
    external_id_field: str = Field(default="Leaditio_Lead_ID__c",
                                   description="External ID field the upsert matches on")
    api_version: str = Field(default="59.0", description="Salesforce REST API version")
    timeout: float = Field(default=30.0, gt=0, description="seconds per request")
    on_duplicate: Literal["dead_letter", "allow_save"] = Field(
        default="dead_letter", description="a duplicate rule matched: dead-letter the lead, or save it anyway "
                                           "(works for rules whose action is Allow + Alert)")
    on_converted: Literal["skip", "update_contact"] = Field(
        default="skip", description="the Lead was converted: skip the update, or update the converted Contact")
    assignment_rules: bool = Field(default=True,
                                   description="let the Lead assignment rule choose the owner of a new lead "
                                               "(never on updates: a rep working a lead keeps it)")
    assignment_rule_id: str | None = Field(
        default=None, description="run this assignment rule (its 01Q... id) on new leads instead of the "
                                  "active one")
    ca_bundle: str | None = Field(default=None, description="CA file for a TLS-inspecting proxy")

    @field_validator("domain")
    @classmethod
    def _bare_domain(cls, value: str) -> str:
        """`https://acme.my.salesforce.com/` -> `acme.my`: the library builds https://{domain}.salesforce.com."""
        value = re.sub(r"^https?://", "", value.strip()).rstrip("/")
        value = re.sub(r"\.salesforce\.com$", "", value)
        if not value or "/" in value:
            raise ValueError("write login, test, or your My Domain such as acme.my")
        return value

    @field_validator("assignment_rule_id")
    @classmethod
    def _rule_id(cls, value: str | None) -> str | None:
        if value is None:
            return None
        value = value.strip()
        if not re.fullmatch(r"01Q[0-9A-Za-z]{12}(?:[0-9A-Za-z]{3})?", value):
            raise ValueError("an assignment rule id is 15 or 18 characters starting with 01Q (Setup > Lead "
                             "Assignment Rules: open the rule, the id is in the address)")
        return value

    @field_validator("api_version")
    @classmethod
    def _version(cls, value: str) -> str:
        value = str(value).strip().lstrip("vV")
        if not re.fullmatch(r"\d{2}\.0", value):
            raise ValueError("write the version like 59.0")
        return value

    @field_validator("timeout", mode="before")
    @classmethod
    def _duration(cls, value: Any) -> float:
        return seconds(value)

    @model_validator(mode="after")
    def _complete_auth(self) -> Settings:
        if self.assignment_rule_id and not self.assignment_rules:
            raise ValueError("assignment_rule_id is set but assignment_rules is false: remove one of them")

        def need(*names: str) -> None:
            missing = [n for n in names if getattr(self, n) in (None, "")]
            if missing:
                raise ValueError(f"auth: {self.auth} needs {', '.join(missing)}")

        if self.auth == "password":
            need("username", "password")
            if bool(self.consumer_key) != bool(self.consumer_secret):
                raise ValueError("auth: password with a connected app needs both consumer_key and consumer_secret")
        elif self.auth == "client_credentials":
            need("consumer_key", "consumer_secret")
            if self.domain in ("login", "test"):
                raise ValueError("auth: client_credentials needs your My Domain, e.g. domain: acme.my "
                                 "(or acme--uat.sandbox.my for a sandbox); login and test do not work")
        elif self.auth == "jwt":
            need("username", "consumer_key", "private_key")
        else:
            need("session_id", "instance_url")
        return self
