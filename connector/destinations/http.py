"""A generic HTTP CRM: the mapped record as a JSON body, one request per lead.

Every request carries an `Idempotency-Key` that stays the same across retries of one delivery (with the same body),
and, when a signing secret is set, our own HMAC signature so the CRM can trust the sender.

Requests go out through urllib3's connection pool, not a requests Session: profiled per delivered lead
(bench/worker_cpu.py), requests' own machinery (preparing, merging settings and cookies, its
runtime-checked protocols) cost about a third of the worker's CPU, 1.47 -> 0.96 ms per lead without
it. What requests read from the environment (proxy variables and NO_PROXY, REQUESTS_CA_BUNDLE,
~/.netrc) is still honoured, read once for the destination's URL (`connection_pool`). Redirects are
not followed: a CRM's 3xx is an answer to classify, as any other (requests turned a redirected POST
into a GET without its body).
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
from typing import Any, Literal
from urllib.parse import urlsplit

import certifi
import requests.utils
import urllib3
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
        self.pool, self._auth = connection_pool(settings)

    def send(self, records: list[OutboundRecord]) -> list[Outcome]:
        return [self._send_one(record) for record in records]

    def _send_one(self, record: OutboundRecord) -> Outcome:
        s = self.settings
        body = json.dumps(record.payload(), ensure_ascii=False, separators=(",", ":")).encode()
        headers = {"Content-Type": "application/json", **s.headers,
                   s.idempotency_header: idempotency_key(self.name, record.delivery_id, body),
                   "X-Lead-Key": record.lead_key, "X-Event-Type": record.event_type, **self._auth}
        if s.signing_secret:
            headers[s.signature_header] = hmac.new(s.signing_secret.encode(), body, hashlib.sha256).hexdigest()
        try:
            response = self.pool.request(s.method, s.url, body=body, headers=headers, redirect=False)
        except urllib3.exceptions.HTTPError as exc:
            return Outcome(record.delivery_id, error=network_error(self.name, exc))
        if 200 <= response.status < 300:
            return Outcome(record.delivery_id, crm_id=_answer_id(response.data))
        code, message = _problem(response.status, response.data)
        return Outcome(record.delivery_id, error=classify(
            "http", status=response.status, code=code, message=message,
            retry_after=parse_retry_after(response.headers.get("Retry-After"))))

    def close(self) -> None:
        self.pool.clear()


def connection_pool(settings: Settings) -> tuple[urllib3.PoolManager, dict[str, str]]:
    """A keep-alive pool for the destination's URL, and the headers every request adds, set up as requests
    would for that URL: through the proxy the environment names unless NO_PROXY exempts the host, trusting
    the destination's `ca_bundle`, else REQUESTS_CA_BUNDLE / CURL_CA_BUNDLE, else certifi's bundle (as
    requests does, rather than the system's), with ~/.netrc's login if it has one for the host."""
    bundle = (settings.ca_bundle or os.environ.get("REQUESTS_CA_BUNDLE") or os.environ.get("CURL_CA_BUNDLE")
              or certifi.where())
    options: dict[str, Any] = {"retries": False, "ca_certs": bundle,
                               "timeout": urllib3.Timeout(connect=settings.timeout, read=settings.timeout)}
    proxies = requests.utils.get_environ_proxies(settings.url)
    proxy = proxies.get(urlsplit(settings.url).scheme) or proxies.get("all")
    netrc = requests.utils.get_netrc_auth(settings.url)
    auth = urllib3.util.make_headers(basic_auth=":".join(netrc)) if netrc else {}
    return (urllib3.ProxyManager(proxy, **options) if proxy else urllib3.PoolManager(**options)), \
        {"User-Agent": "leads-connector", **auth}


def idempotency_key(destination: str, delivery_id: int, body: bytes) -> str:
    """The same for every retry of one delivery with the same body, so a CRM that saves answers per key
    (as Stripe's API does) writes it once; different once the body changes (a mapping fixed before a
    dead letter is retried), because such a CRM refuses a key reused with other parameters."""
    return f"{destination}:{delivery_id}:{hashlib.sha256(body).hexdigest()[:16]}"


def _answer_id(body: bytes) -> str | None:
    try:
        data = json.loads(body)
    except ValueError:
        return None
    value = data.get("id") if isinstance(data, dict) else None
    return str(value) if value is not None else None


def _problem(status: int, body: bytes) -> tuple[str | None, str]:
    """The CRM's own code and words, from `{"code","message"}`, `{"error":{...}}` or plain text."""
    try:
        data = json.loads(body)
    except ValueError:
        return None, f"HTTP {status}: {body.decode('utf-8', 'replace')[:300]}"
    if isinstance(data, dict):
        inner = data.get("error") if isinstance(data.get("error"), dict) else data
        code = inner.get("code") or inner.get("errorCode")
        message = inner.get("message") or inner.get("error_description") or json.dumps(data)[:300]
        return (str(code) if code else None), f"HTTP {status}: {message}"
    return None, f"HTTP {status}: {json.dumps(data)[:300]}"
