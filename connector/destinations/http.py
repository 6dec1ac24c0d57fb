"""A generic HTTP CRM: the mapped record as a JSON body, one request per lead, several in flight.

A batch goes out `concurrency` requests at a time, so one slow answer holds up only its own lead. Each
request is addressed by a URL template (`{lead_key}`, and `{crm_id}` once the CRM has answered an id), so a
REST CRM can upsert by its own record URLs. Every request carries an `Idempotency-Key` that stays the same
across retries of one delivery (with the same body), and, when a signing secret is set, a signature the CRM
can check: Standard Webhooks (`webhook-id`, `webhook-timestamp`, `webhook-signature`) for a `whsec_` secret,
our own HMAC hex of the body otherwise.

Requests go out through urllib3's connection pool, not a requests Session: profiled per delivered lead
(bench/worker_cpu.py), requests' own machinery (preparing, merging settings and cookies, its
runtime-checked protocols) cost about a third of the worker's CPU, 1.47 -> 0.96 ms per lead without
it. What requests read from the environment (proxy variables and NO_PROXY, REQUESTS_CA_BUNDLE,
~/.netrc) is still honoured, read once for the destination's host (`connection_pool`); the
destination's own `ca_bundle` comes first. Redirects are not followed: a CRM's 3xx is an answer to
classify, as any other (requests turned a redirected POST into a GET without its body).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import os
import string
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from typing import Any, ClassVar, Literal
from urllib.parse import quote, urlsplit

import certifi
import requests.utils
import urllib3
from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator
from standardwebhooks.webhooks import Webhook

from connector.destinations.base import Destination, DestinationSettings
from connector.errors import Permanent, classify, network_error, parse_retry_after
from connector.records import OutboundRecord, Outcome

Method = Literal["POST", "PUT", "PATCH"]
# Printable ASCII but `%` goes into a header as it is; anything else is percent-encoded (UTF-8): a header
# carries Latin-1 at best, and a space at either end would be trimmed.
_HEADER_SAFE = "".join(chr(c) for c in range(0x21, 0x7F) if chr(c) != "%")
WHSEC = "whsec_"  # the Standard Webhooks prefix of a symmetric secret (standardwebhooks.com, "Signature scheme")


def parse_template(text: str, allowed: tuple[str, ...]) -> list[tuple[str, str | None]]:
    """`text` as (literal, placeholder) pairs, or a ValueError a CRM admin can act on.

    Placeholders go in the path or the query, never in the scheme or host: a lead's key must not choose
    which server gets its data."""
    try:
        parsed = list(string.Formatter().parse(text))
    except ValueError as exc:
        raise ValueError(f"{exc} in the URL template: placeholders are written {{lead_key}}; write "
                         "{{ or }} for a literal brace") from None
    parts = [(literal, name) for literal, name, spec, conversion in parsed
             if _plain(name, spec, conversion, allowed)]
    literal_prefix = parts[0][0] if parts else text
    if any(name is not None for _, name in parts) and not urlsplit(literal_prefix).path \
            and "?" not in literal_prefix:
        raise ValueError("placeholders go in the URL's path or query, not in its scheme, host or port")
    whole = urlsplit("".join(literal + ("x" if name else "") for literal, name in parts))
    if whole.scheme not in ("http", "https") or not whole.netloc:
        raise ValueError("the URL must start with http:// or https:// and a host")
    return parts


def _plain(name: str | None, spec: str | None, conversion: str | None, allowed: tuple[str, ...]) -> bool:
    if name is None:
        return True
    if name not in allowed:
        known = ", ".join(f"{{{n}}}" for n in allowed)
        if name == "crm_id":
            raise ValueError("{crm_id} is unknown until the CRM has answered for the lead: use it in "
                             "update.url, with url (or create.url) for leads the CRM has not seen yet")
        raise ValueError(f"unknown placeholder {{{name}}} in the URL template (known: {known})")
    if spec or conversion:
        raise ValueError(f"write {{{name}}} alone: no format spec or conversion")
    return True


def render(parts: list[tuple[str, str | None]], values: dict[str, str]) -> str:
    """Fill the placeholders, each value percent-encoded whole: a `/`, `?` or `#` in a lead key stays
    inside its own path segment. A value of only dots would be a `.`/`..` path step that clients and
    servers resolve (`/leads/..` is `/`), so such a lead cannot be addressed and is refused."""
    out = []
    for literal, name in parts:
        out.append(literal)
        if name is not None:
            value = values[name]
            if value.strip(".") == "":
                raise Permanent(f"the {name} {value!r} cannot be put in a URL path", code="unaddressable")
            out.append(quote(value, safe=""))
    return "".join(out)


class Request(BaseModel):
    """Where one kind of request goes: `create` for a lead without a CRM id, `update` for one with."""

    model_config = ConfigDict(extra="forbid")
    placeholders: ClassVar[tuple[str, ...]] = ("lead_key",)
    method: Method = Field(description="POST, PUT or PATCH")
    url: str = Field(description="URL template")

    @field_validator("url")
    @classmethod
    def _url(cls, value: str) -> str:
        parse_template(value, cls.placeholders)
        return value


class UpdateRequest(Request):
    placeholders: ClassVar[tuple[str, ...]] = ("lead_key", "crm_id")


class Settings(DestinationSettings):
    url: str | None = Field(default=None, description="the CRM endpoint for every lead: a URL template that "
                            "may use {lead_key} (give create instead to pick the method too)")
    method: Method = "POST"
    create: Request | None = Field(default=None, validate_default=True, description="{method, url} for a lead "
                                   "the CRM has not given an id yet (instead of url and method)")
    update: UpdateRequest | None = Field(default=None, description="{method, url} for a lead the CRM has "
                                         "given an id: the URL may use {crm_id} and {lead_key}")
    id_field: str = Field(default="id", description="where the CRM's id is in its JSON answer: a dotted "
                          "path, e.g. id, data.id, results.0.id")
    concurrency: int = Field(default=8, ge=1, le=100, description="requests in flight at once, per worker "
                             "thread")
    headers: dict[str, str] = Field(default_factory=dict,
                                    description="extra headers; secret values as ${ENV_VAR}")
    timeout: float = Field(default=10.0, gt=0, description="seconds per request")
    idempotency_header: str = "Idempotency-Key"
    signing_secret: str | None = Field(default=None, description="(${ENV_VAR}) a whsec_ secret signs the "
                                       "Standard Webhooks way; any other HMAC-SHA256 hex of the body")
    signature_header: str = Field(default="X-Connector-Signature",
                                  description="where the hex signature goes (not for a whsec_ secret)")
    ca_bundle: str | None = Field(default=None, description="CA file for a private certificate authority")
    record_url: str | None = Field(default=None,
                                   description="a lead's page in the CRM, with {id} for the id the CRM answered, "
                                               "e.g. https://crm.example.com/leads/{id} (speed-to-lead notices)")

    @field_validator("record_url")
    @classmethod
    def _template(cls, value: str | None) -> str | None:
        if value is not None and "{id}" not in value:
            raise ValueError("write {id} where the CRM's record id goes, e.g. https://crm.example.com/leads/{id}")
        return value

    @field_validator("url")
    @classmethod
    def _url(cls, value: str | None) -> str | None:
        if value is not None:
            parse_template(value, ("lead_key",))
        return value

    @field_validator("create")
    @classmethod
    def _one_way_to_create(cls, value: Request | None, info: ValidationInfo) -> Request | None:
        if value is not None and info.data.get("url"):
            raise ValueError("give either url (with method) or create, not both")
        if value is None and not info.data.get("url") and "url" in info.data:
            raise ValueError("give url (with method), or create, for leads the CRM has not seen")
        return value

    @field_validator("id_field")
    @classmethod
    def _id_field(cls, value: str) -> str:
        if not value or any(not part for part in value.split(".")):
            raise ValueError("a dotted path like id or data.id, without empty parts")
        return value

    @field_validator("signing_secret")
    @classmethod
    def _secret(cls, value: str | None) -> str | None:
        if value and value.startswith(WHSEC):
            _whsec_key(value)
        return value


def _whsec_key(secret: str) -> bytes:
    """The key of a `whsec_` secret; the spec asks for 24 to 64 random bytes, base64-encoded.
    Never quotes the secret: the message reaches logs and the terminal."""
    encoded = secret[len(WHSEC):]
    try:
        key = base64.b64decode(encoded + "=" * (-len(encoded) % 4), validate=True)
    except (binascii.Error, ValueError):
        raise ValueError("a whsec_ secret is whsec_ followed by base64; this one is not valid base64") from None
    if not 24 <= len(key) <= 64:
        raise ValueError(f"a whsec_ secret holds 24 to 64 bytes (Standard Webhooks); this one holds {len(key)}")
    return key


class HttpDestination(Destination):
    kind = "http"
    Settings = Settings
    max_batch = 20

    def __init__(self, name: str, settings: Settings):
        super().__init__(name, settings)
        self.settings: Settings = settings
        create = settings.create or Request(method=settings.method, url=settings.url or "")
        self.pool, self._auth = connection_pool(settings, create.url)
        self._create = (create.method, parse_template(create.url, create.placeholders))
        self._update = (settings.update.method, parse_template(settings.update.url, settings.update.placeholders)) \
            if settings.update else None
        self._id_path = tuple(settings.id_field.split("."))
        secret = settings.signing_secret
        self._webhook = Webhook(_whsec_key(secret)) if secret and secret.startswith(WHSEC) else None
        self._pool: ThreadPoolExecutor | None = None

    def send(self, records: list[OutboundRecord]) -> list[Outcome]:
        """One request per record, up to `concurrency` at once; outcomes in the records' order."""
        if len(records) == 1 or self.settings.concurrency == 1:
            return [self._send_one(record) for record in records]
        if self._pool is None:
            self._pool = ThreadPoolExecutor(self.settings.concurrency, thread_name_prefix=f"http-{self.name}")
        return list(self._pool.map(self._send_one, records))

    def _send_one(self, record: OutboundRecord) -> Outcome:
        s = self.settings
        method, template = self._update if self._update and record.crm_id else self._create
        try:
            url = render(template, {"lead_key": record.lead_key, "crm_id": record.crm_id or ""})
        except Permanent as exc:
            return Outcome(record.delivery_id, error=exc)
        body = json.dumps(record.payload(), ensure_ascii=False, separators=(",", ":")).encode()
        headers = {"Content-Type": "application/json", **s.headers,
                   s.idempotency_header: idempotency_key(self.name, record.delivery_id, body),
                   "X-Lead-Key": header_value(record.lead_key), "X-Event-Type": record.event_type, **self._auth}
        if self._webhook is not None:
            headers.update(signed(self._webhook, record.delivery_id, body))
        elif s.signing_secret:
            headers[s.signature_header] = hmac.new(s.signing_secret.encode(), body, hashlib.sha256).hexdigest()
        try:
            response = self.pool.request(method, url, body=body, headers=headers, redirect=False)
        except urllib3.exceptions.HTTPError as exc:
            return Outcome(record.delivery_id, error=network_error(self.name, exc))
        if 200 <= response.status < 300:
            return Outcome(record.delivery_id, crm_id=_answer_id(response.data, self._id_path))
        code, message = _problem(response.status, response.data)
        return Outcome(record.delivery_id, error=classify(
            "http", status=response.status, code=code, message=message,
            retry_after=parse_retry_after(response.headers.get("Retry-After"))))

    def record_url(self, crm_id: str) -> str | None:
        template = self.settings.record_url
        return template.replace("{id}", quote(crm_id, safe="")) if template else None

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True)
            self._pool = None
        self.pool.clear()


def connection_pool(settings: Settings, url: str) -> tuple[urllib3.PoolManager, dict[str, str]]:
    """A keep-alive pool for the destination's host (`url`: its create URL; templates never choose the
    host), one connection per request in flight, and the headers every request adds, set up as requests
    would for that URL: through the proxy the environment names unless NO_PROXY exempts the host, trusting
    the destination's `ca_bundle`, else REQUESTS_CA_BUNDLE / CURL_CA_BUNDLE, else certifi's bundle (as
    requests does, rather than the system's), with ~/.netrc's login if it has one for the host."""
    bundle = (settings.ca_bundle or os.environ.get("REQUESTS_CA_BUNDLE") or os.environ.get("CURL_CA_BUNDLE")
              or certifi.where())
    options: dict[str, Any] = {"retries": False, "ca_certs": bundle, "maxsize": settings.concurrency,
                               "timeout": urllib3.Timeout(connect=settings.timeout, read=settings.timeout)}
    proxies = requests.utils.get_environ_proxies(url)
    proxy = proxies.get(urlsplit(url).scheme) or proxies.get("all")
    netrc = requests.utils.get_netrc_auth(url)
    auth = urllib3.util.make_headers(basic_auth=":".join(netrc)) if netrc else {}
    return (urllib3.ProxyManager(proxy, **options) if proxy else urllib3.PoolManager(**options)), \
        {"User-Agent": "leads-connector", **auth}


def header_value(text: str) -> str:
    """`text` for a header: unchanged when it is printable ASCII without `%` (every marketplace's lead key
    so far), else percent-encoded so the CRM can decode it exactly."""
    return quote(text, safe=_HEADER_SAFE)


def idempotency_key(destination: str, delivery_id: int, body: bytes) -> str:
    """The same for every retry of one delivery with the same body, so a CRM that saves answers per key
    (as Stripe's API does) writes it once; different once the body changes (a mapping fixed before a
    dead letter is retried), because such a CRM refuses a key reused with other parameters."""
    return f"{destination}:{delivery_id}:{hashlib.sha256(body).hexdigest()[:16]}"


def signed(webhook: Webhook, delivery_id: int, body: bytes) -> dict[str, str]:
    """The Standard Webhooks headers: the id is the same on every retry of this delivery (the CRM's
    idempotency key), the timestamp is this attempt's, as the spec asks."""
    msg_id = webhook_id(delivery_id, body)
    now = int(time.time())
    signature = webhook.sign(msg_id, datetime.fromtimestamp(now, UTC), body.decode())
    return {"webhook-id": msg_id, "webhook-timestamp": str(now), "webhook-signature": signature}


def webhook_id(delivery_id: int, body: bytes) -> str:
    """The Standard Webhooks message id: stable across retries as the Idempotency-Key is, and without the
    `.` the spec forbids (it separates id, timestamp and body in what is signed)."""
    return f"msg_{delivery_id}_{hashlib.sha256(body).hexdigest()[:16]}"


def _answer_id(body: bytes, path: tuple[str, ...]) -> str | None:
    try:
        data = json.loads(body)
    except ValueError:
        return None
    for part in path:
        if isinstance(data, dict):
            data = data.get(part)
        elif isinstance(data, list) and part.isdigit() and int(part) < len(data):
            data = data[int(part)]
        else:
            return None
    if data is None or data == "" or isinstance(data, dict | list):
        return None
    return str(data)


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
