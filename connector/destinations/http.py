"""A generic HTTP CRM: the mapped record as a JSON body, one request per lead.

Every request carries an `Idempotency-Key` that stays the same across retries of one delivery (with the same body),
and, when a signing secret is set, our own HMAC signature so the CRM can trust the sender.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
from typing import Literal

import requests
from pydantic import Field

from connector.destinations.base import Destination, DestinationSettings
from connector.errors import classify, network_error, parse_retry_after
from connector.records import OutboundRecord, Outcome


class Settings(DestinationSettings):
    url: str = Field(description="the CRM endpoint that takes one lead per request")
    method: Literal["POST", "PUT", "PATCH"] = "POST"
    headers: dict[str, str] = Field(default_factory=dict,
                                    description="extra headers; secret values as ${ENV_VAR}")
    timeout: float = Field(default=10.0, gt=0, description="seconds per request")
    idempotency_header: str = "Idempotency-Key"
    signing_secret: str | None = Field(default=None, description="HMAC-SHA256 the body with this (${ENV_VAR})")
    signature_header: str = "X-Connector-Signature"
    ca_bundle: str | None = Field(default=None, description="CA file for a private certificate authority")


class HttpDestination(Destination):
    kind = "http"
    Settings = Settings
    max_batch = 20

    def __init__(self, name: str, settings: Settings):
        super().__init__(name, settings)
        self.settings: Settings = settings
        self.session = requests.Session()
        trust_environment_once(self.session, settings.url)
        if settings.ca_bundle:
            self.session.verify = settings.ca_bundle

    def send(self, records: list[OutboundRecord]) -> list[Outcome]:
        return [self._send_one(record) for record in records]

    def _send_one(self, record: OutboundRecord) -> Outcome:
        s = self.settings
        body = json.dumps(record.payload(), ensure_ascii=False, separators=(",", ":")).encode()
        headers = {"Content-Type": "application/json", **s.headers,
                   s.idempotency_header: idempotency_key(self.name, record.delivery_id, body),
                   "X-Lead-Key": record.lead_key, "X-Event-Type": record.event_type}
        if s.signing_secret:
            headers[s.signature_header] = hmac.new(s.signing_secret.encode(), body, hashlib.sha256).hexdigest()
        try:
            response = self.session.request(s.method, s.url, data=body, headers=headers, timeout=s.timeout)
        except requests.RequestException as exc:
            return Outcome(record.delivery_id, error=network_error(self.name, exc))
        if 200 <= response.status_code < 300:
            return Outcome(record.delivery_id, crm_id=_answer_id(response))
        code, message = _problem(response)
        return Outcome(record.delivery_id, error=classify(
            "http", status=response.status_code, code=code, message=message,
            retry_after=parse_retry_after(response.headers.get("Retry-After"))))

    def close(self) -> None:
        self.session.close()


def trust_environment_once(session: requests.Session, url: str) -> None:
    """What requests reads from the environment on every request (the proxy variables and `no_proxy`,
    `REQUESTS_CA_BUNDLE`/`CURL_CA_BUNDLE`, `~/.netrc`), read once for the destination's URL instead.

    Profiled, that per-request lookup (`Session.merge_environment_settings`, a walk over every
    environment variable) was about 15% of the worker's CPU per delivered lead. The process's
    environment does not change while it runs, so the answer does not either.
    """
    session.proxies.update(requests.utils.get_environ_proxies(url))
    bundle = os.environ.get("REQUESTS_CA_BUNDLE") or os.environ.get("CURL_CA_BUNDLE")
    if bundle:
        session.verify = bundle
    session.auth = requests.utils.get_netrc_auth(url)
    session.trust_env = False


def idempotency_key(destination: str, delivery_id: int, body: bytes) -> str:
    """The same for every retry of one delivery with the same body, so a CRM that saves answers per key
    (as Stripe's API does) writes it once; different once the body changes (a mapping fixed before a
    dead letter is retried), because such a CRM refuses a key reused with other parameters."""
    return f"{destination}:{delivery_id}:{hashlib.sha256(body).hexdigest()[:16]}"


def _answer_id(response: requests.Response) -> str | None:
    try:
        data = response.json()
    except ValueError:
        return None
    value = data.get("id") if isinstance(data, dict) else None
    return str(value) if value is not None else None


def _problem(response: requests.Response) -> tuple[str | None, str]:
    """The CRM's own code and words, from `{"code","message"}`, `{"error":{...}}` or plain text."""
    try:
        data = response.json()
    except ValueError:
        return None, f"HTTP {response.status_code}: {response.text[:300]}"
    if isinstance(data, dict):
        inner = data.get("error") if isinstance(data.get("error"), dict) else data
        code = inner.get("code") or inner.get("errorCode")
        message = inner.get("message") or inner.get("error_description") or json.dumps(data)[:300]
        return (str(code) if code else None), f"HTTP {response.status_code}: {message}"
    return None, f"HTTP {response.status_code}: {json.dumps(data)[:300]}"
