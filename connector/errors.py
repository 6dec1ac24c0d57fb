"""The one place that decides what a failure means.

Every destination and API client turns what went wrong into one of four classes, through the
single table `RULES` below; only the worker acts on them (retry, pause, dead-letter, skip):

- `Retryable`: try again later (network, timeout, 5xx, lock contention). `retry_after` is a hint.
- `RateLimited`: a Retryable whose wait the remote told us; with `pause_destination` the whole
  destination waits (a daily quota), not just this record. `Paced`: the shared rate budget said
  wait before anything was sent.
- `Permanent`: the CRM rejected this record; it goes to dead letters with the CRM's own words.
- `ConfigProblem`: nothing is wrong with the lead: credentials, a mapping or a setting are.
  Deliveries wait, the destination is paused and `connector status` says why.
- `Skip`: the CRM will never take this record and that is expected (e.g. a converted lead);
  recorded, not retried, not a dead letter.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from email.utils import parsedate_to_datetime


class ConnectorError(Exception):
    """Base of every classified failure. `code` is the remote's own code, `field` the field it blames."""

    def __init__(self, message: str, *, code: str | None = None, field: str | None = None,
                 status: int | None = None):
        super().__init__(message)
        self.message = message
        self.code = code
        self.field = field
        self.status = status

    def describe(self) -> str:
        parts = [self.code] if self.code else []
        if self.field:
            parts.append(f"field {self.field}")
        prefix = f"[{', '.join(parts)}] " if parts else ""
        return f"{prefix}{self.message}"


class Retryable(ConnectorError):
    def __init__(self, message: str, *, retry_after: float | None = None, **kw):
        super().__init__(message, **kw)
        self.retry_after = retry_after


class RateLimited(Retryable):
    def __init__(self, message: str, *, retry_after: float | None = None,
                 pause_destination: bool = False, **kw):
        super().__init__(message, retry_after=retry_after, **kw)
        self.pause_destination = pause_destination


class Paced(RateLimited):
    """Nothing was sent: the key's shared rate budget (connector.pacing) has room again in `retry_after`
    seconds. The worker gives the records back untouched (no attempt counted) and rests the destination
    that long; no other process sends meanwhile either, since they share the budget."""


class Permanent(ConnectorError):
    pass


class ConfigProblem(ConnectorError):
    pass


class Skip(ConnectorError):
    pass


class ConfigError(Exception):
    """A configuration or mapping file is wrong; raised at load time, printed without a traceback."""

    def __init__(self, message: str, *, file: str | None = None, line: int | None = None,
                 key: str | None = None):
        self.file, self.line, self.key, self.message = file, line, key, message
        where = file or ""
        if file and line:
            where = f"{file}:{line}"
        bits = [b for b in (where, key) if b]
        super().__init__(f"{': '.join(bits)}: {message}" if bits else message)


@dataclass(frozen=True)
class Rule:
    """One row of the table: which failure (by remote kind, HTTP status, remote code) is which class."""

    remote: str | None  # "salesforce", "hubspot", "http", "leaditio", ... ; None matches any
    status: int | range | None  # None matches any
    code: str | None  # remote error code; None matches any
    kind: type[ConnectorError]
    extra: tuple[tuple[str, object], ...] = ()


_5XX = range(500, 600)

# First match wins: specific codes first, then per-remote statuses, then generic statuses.
RULES: list[Rule] = [
    # --- Salesforce -------------------------------------------------------------------
    Rule("salesforce", None, "INVALID_SESSION_ID", ConfigProblem),  # only after one renewal failed
    Rule("salesforce", None, "REQUEST_LIMIT_EXCEEDED", RateLimited, (("pause_destination", True),)),
    Rule("salesforce", None, "UNABLE_TO_LOCK_ROW", Retryable),
    Rule("salesforce", None, "SERVER_UNAVAILABLE", Retryable),
    Rule("salesforce", None, "UNKNOWN_EXCEPTION", Retryable),
    Rule("salesforce", None, "API_DISABLED_FOR_ORG", ConfigProblem),
    Rule("salesforce", None, "API_CURRENTLY_DISABLED", ConfigProblem),
    # One record's INVALID_FIELD inside a 200 Collections answer (e.g. a foreign-key external id not found)
    # is that lead's problem; a whole request refused with it (a mapped field that does not exist) is config.
    Rule("salesforce", 200, "INVALID_FIELD", Permanent),
    Rule("salesforce", None, "INVALID_FIELD", ConfigProblem),
    Rule("salesforce", None, "NOT_FOUND", ConfigProblem),
    Rule("salesforce", None, "INVALID_TYPE", ConfigProblem),
    Rule("salesforce", None, "CANNOT_UPDATE_CONVERTED_LEAD", Skip),
    Rule("salesforce", None, "DUPLICATES_DETECTED", Permanent),  # unless on_duplicate: allow_save saved it
    Rule("salesforce", None, "DUPLICATE_EXTERNAL_ID", Permanent),  # several records share the external id
    Rule("salesforce", None, "REQUIRED_FIELD_MISSING", Permanent),
    Rule("salesforce", None, "STRING_TOO_LONG", Permanent),
    Rule("salesforce", None, "INVALID_OR_NULL_FOR_RESTRICTED_PICKLIST", Permanent),
    # A login Salesforce refuses is a config problem (deliveries wait), unless Salesforce itself is down.
    Rule("salesforce-login", _5XX, None, Retryable),
    Rule("salesforce-login", None, None, ConfigProblem),
    # --- HubSpot ----------------------------------------------------------------------
    Rule("hubspot", 401, None, ConfigProblem),
    Rule("hubspot", 403, None, ConfigProblem),
    Rule("hubspot", None, "NON_UNIQUE_ID_PROPERTY", ConfigProblem),  # id_property lacks hasUniqueValue
    Rule("hubspot", None, "PROPERTY_DOESNT_EXIST", ConfigProblem),  # the mapping names a missing property
    Rule("hubspot", None, "READ_ONLY_VALUE", ConfigProblem),  # the mapping writes a read-only property
    Rule("hubspot", None, "DUPLICATE_ID_IN_BATCH", Retryable),  # goes again in a later batch
    Rule("hubspot", 429, "DAILY", RateLimited, (("pause_destination", True),)),
    Rule("hubspot", 429, None, RateLimited),
    # --- LeadNod: OAuth token endpoint (RFC 6749 codes, sent with 400 or 401) ----------
    Rule("leadnod", None, "invalid_client", ConfigProblem),
    Rule("leadnod", None, "unauthorized_client", ConfigProblem),
    Rule("leadnod", None, "invalid_scope", ConfigProblem),
    Rule("leadnod", None, "unsupported_grant_type", ConfigProblem),
    # --- Marketplace APIs (backfill and account calls) --------------------------------
    Rule(None, 401, "unauthorized", ConfigProblem),
    Rule(None, 403, "forbidden", ConfigProblem),
    # --- Any HTTP remote --------------------------------------------------------------
    Rule(None, 401, None, ConfigProblem),
    Rule(None, 403, None, ConfigProblem),
    Rule(None, 408, None, Retryable),
    Rule(None, 425, None, Retryable),
    Rule(None, 429, None, RateLimited),
    Rule(None, _5XX, None, Retryable),
    Rule(None, range(400, 500), None, Permanent),
]


def _matches(rule: Rule, remote: str, status: int | None, code: str | None) -> bool:
    if rule.remote is not None and rule.remote != remote:
        return False
    if rule.code is not None and rule.code != code:
        return False
    if rule.status is None:
        return True
    if status is None:
        return False
    return status in rule.status if isinstance(rule.status, range) else status == rule.status


def classify(remote: str, *, status: int | None = None, code: str | None = None, message: str = "",
             field: str | None = None, retry_after: float | None = None) -> ConnectorError:
    """Turn a remote's answer into the one error class the worker understands."""
    for rule in RULES:
        if _matches(rule, remote, status, code):
            kind, extra = rule.kind, dict(rule.extra)
            break
    else:
        kind, extra = (Retryable if status is None or status >= 500 else Permanent), {}
    kw: dict = {"code": code, "field": field, "status": status}
    if issubclass(kind, Retryable):
        kw["retry_after"] = retry_after
    kw.update(extra)
    text = message or (f"HTTP {status}" if status else "failed")
    return kind(text, **kw)


def network_error(remote: str, exc: BaseException) -> Retryable:
    """Timeouts, refused connections and TLS failures: always worth another try."""
    return Retryable(f"{remote} unreachable: {type(exc).__name__}: {exc}", code="network")


def parse_retry_after(value: str | None, now: float | None = None) -> float | None:
    """`Retry-After` as seconds or an HTTP date -> seconds to wait (never negative)."""
    if not value:
        return None
    value = value.strip()
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = parsedate_to_datetime(value).timestamp()
    except (TypeError, ValueError, IndexError):
        return None
    return max(0.0, when - (now if now is not None else time.time()))
