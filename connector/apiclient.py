"""Calling a marketplace's REST API politely: the key's shared rate budget, retries, classified errors.

Marketplace clients (connector/sources/*.py) build one `ApiClient` each and call `get`/`post`;
everything about failure lives here, and pacing in connector.pacing, so every marketplace behaves
the same:

    budget = marketplace_budget(runtime.budgets, "leaditio", api_key, requests_per_minute=60, scope=base_url)
    client = ApiClient("leaditio", "https://leaditio.com/api/v1",
                       headers={"Authorization": f"Bearer {api_key}"}, budget=budget,
                       hints={401: "check LEADITIO_API_KEY"})
    page = client.get("/leads", params={"page": 1, "limit": 100})   # parsed JSON
    lead = client.get("/leads/lead_abc", missing_ok=True)            # None on 404

- The budget (`connector.pacing.Budget`, kept in the database) is shared by every process using the
  key: a backfill, a reconcile, a stats call and a webhook registration, on any machine, never add up
  to more than the key allows. Every response's `X-RateLimit-*` headers feed it; a 429 holds every
  caller of the key until `Retry-After`. A client marked `background` (backfill, reconcile) leaves
  part of each window to the others (`pacing.BACKGROUND_SHARE`).
- `ApiClient` sends the request, retries 5xx and network errors with exponential backoff
  (`RetryPolicy`), waits out 429s, and turns a final failure's `{"code", "message"}` body into
  the error class from `connector.errors.classify`, with an operator hint appended.
- Counters (`ApiClient.counters`) say how many requests, 429s and retries happened: the backfill's
  summary and the benchmark read them.

Nothing here logs request bodies, query strings or responses (they carry phone numbers and emails).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import requests
from pydantic import BaseModel, ConfigDict, Field, field_validator

from connector.backoff import backoff
from connector.errors import (
    ConnectorError,
    Retryable,
    classify,
    network_error,
    parse_retry_after,
)
from connector.pacing import Budget, Budgets, Window, header_float, header_int

log = logging.getLogger(__name__)



class ApiSettingsBase(BaseModel):
    """What every marketplace's `api:` block shares: pacing, timeouts and retries."""

    model_config = ConfigDict(extra="forbid")

    requests_per_minute: int = Field(default=60, gt=0, description="the key's limit, shared by every process "
                                     "using it, until the API's rate headers say")
    timeout: float = Field(default=30.0, gt=0, description="seconds per request")
    retries: int = Field(default=5, ge=1, le=20, description="tries for a 5xx or network error")
    backoff: float = Field(default=1.0, gt=0, description="first retry delay in seconds, doubled each time")
    reset_margin: float = Field(default=0.5, ge=0, description="seconds added to X-RateLimit-Reset (clock skew)")


class VersionedRootSettings(ApiSettingsBase):
    """For APIs whose paths carry `/v1` themselves: the root is accepted with or without it."""

    base_url: str

    @field_validator("base_url")
    @classmethod
    def _root(cls, value: str) -> str:
        value = value.rstrip("/")
        return value[: -len("/v1")] if value.endswith("/v1") else value


RATE = "rate"  # the one window of a marketplace API key


def marketplace_budget(budgets: Budgets, remote: str, api_key: str, *, requests_per_minute: int,
                       reset_margin: float = 0.5, scope: str = "") -> Budget:
    """The budget every process shares for one marketplace API key (connector.pacing).

    Until the API answers, `requests_per_minute` in any minute; then the limit the API states. Leaditio
    documents `X-RateLimit-Limit: 60`, `X-RateLimit-Remaining: 54` and `X-RateLimit-Reset: 1716196800`
    (an epoch time) on every response, and 429 `rate_limited` past the limit (Leaditio API reference,
    "Rate Limits"; LeadOS and LeadNod send the same headers). `scope` (the base URL) keeps a sandbox's
    key apart from production's.
    """
    if requests_per_minute <= 0:
        raise ValueError("requests_per_minute must be positive")
    return budgets.budget(remote, api_key, [Window(RATE, requests_per_minute, 60.0)], scope=scope,
                          reset_margin=reset_margin)


def feed_rate_headers(budget: Budget, headers: Mapping[str, str], now: float | None = None) -> float | None:
    """Give the budget a response's `X-RateLimit-*` headers; returns the reset time they state, if any."""
    reset = header_float(headers, "X-RateLimit-Reset")
    if reset is not None and reset < 1e9:  # some APIs send seconds until the reset, not a time
        reset += time.time() if now is None else now
    remaining = header_int(headers, "X-RateLimit-Remaining")
    limit = header_int(headers, "X-RateLimit-Limit")
    if remaining is not None or limit is not None:
        budget.feed(RATE, remaining=remaining, limit=limit, reset_at=reset)
    return reset


@dataclass(frozen=True)
class RetryPolicy:
    """How often and how long to retry 5xx / network failures, and how many 429s to wait out."""

    attempts: int = 5  # tries in all for a 5xx or network error
    base: float = 1.0  # first backoff, doubled each time, with jitter
    cap: float = 60.0
    max_rate_limited: int = 20  # 429s in a row before giving up
    default_retry_after: float = 60.0  # a 429 with no Retry-After and no reset time
    sleep: Callable[[float], None] = field(default=time.sleep, repr=False, compare=False)

    def backoff(self, attempt: int) -> float:
        """Seconds before retry number `attempt` (1-based): exponential with full jitter on top half."""
        return backoff(attempt, self.base, self.cap)


@dataclass
class Counters:
    """What one client did; `add` is thread-safe (detail calls run in parallel)."""

    requests: int = 0
    rate_limited: int = 0  # 429 answers
    retries: int = 0  # 5xx / network retries
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False, compare=False)

    def add(self, name: str) -> None:
        with self._lock:
            setattr(self, name, getattr(self, name) + 1)


class ApiClient:
    """One marketplace API: base URL, auth headers, the shared budget, retries and error mapping."""

    def __init__(self, remote: str, base_url: str, *, headers: Mapping[str, str], budget: Budget,
                 timeout: float = 30.0, retry: RetryPolicy | None = None,
                 hints: Mapping[int | str, str] | None = None):
        self.remote = remote
        self.base_url = base_url.rstrip("/")
        self.headers = {"Accept": "application/json", "User-Agent": "leads-connector", **headers}
        self.budget = budget
        self.background = False  # a backfill or reconcile: takes only while live callers keep a reserve
        self.timeout = timeout
        self.retry = retry or RetryPolicy()
        self.hints = dict(hints or {})  # status or remote code -> what the operator should do
        self.counters = Counters()
        self._local = threading.local()  # one requests.Session per thread
        self._sessions: list[requests.Session] = []

    @property
    def session(self) -> requests.Session:
        session = getattr(self._local, "session", None)
        if session is None:
            session = self._local.session = requests.Session()
            session.headers.update(self.headers)
            self._sessions.append(session)
        return session

    def close(self) -> None:
        """Close every thread's connections (the client stays usable: new sessions open on demand)."""
        sessions, self._sessions = self._sessions, []
        self._local = threading.local()
        for session in sessions:
            session.close()

    def get(self, path: str, *, params: Mapping[str, Any] | None = None, missing_ok: bool = False) -> Any:
        """GET `path` and return its JSON; with `missing_ok`, None on 404. Retries as the policy says."""
        return self.request("GET", path, params=params, missing_ok=missing_ok, retry_server_errors=True)

    def post(self, path: str, *, json: Any) -> Any:
        """POST once (not idempotent: 5xx and network errors are not retried; 429s are waited out)."""
        return self.request("POST", path, json=json, retry_server_errors=False)

    def request(self, method: str, path: str, *, params: Mapping[str, Any] | None = None, json: Any = None,
                missing_ok: bool = False, retry_server_errors: bool = True) -> Any:
        url = f"{self.base_url}/{path.lstrip('/')}"
        failures = rate_limited = 0
        while True:
            self.budget.acquire(self.background)
            self.counters.add("requests")
            try:
                response = self.session.request(method, url, params=params, json=json, timeout=self.timeout)
            except requests.RequestException as exc:
                error: ConnectorError = network_error(self.remote, _without_query(exc))
                failures += 1
                if retry_server_errors and failures < self.retry.attempts:
                    self._pause_before_retry(failures, error)
                    continue
                raise self._with_hint(error, f"{method} {path}") from None
            reset_at = feed_rate_headers(self.budget, response.headers)
            if response.status_code < 400:
                return _json(response)
            if response.status_code == 404 and missing_ok:
                return None
            error = self._classify(response)
            if response.status_code == 429:
                rate_limited += 1
                self.counters.add("rate_limited")
                wait = self._retry_after(response, reset_at)
                self.budget.hold(wait)
                if rate_limited < self.retry.max_rate_limited:
                    log.warning("%s API answered 429 (rate limited): waiting %.1fs", self.remote, wait)
                    continue
            elif isinstance(error, Retryable) and retry_server_errors:
                failures += 1
                if failures < self.retry.attempts:
                    self._pause_before_retry(failures, error)
                    continue
            raise self._with_hint(error, f"{method} {path}")

    # --- helpers ------------------------------------------------------------------------
    def _pause_before_retry(self, failures: int, error: ConnectorError) -> None:
        self.counters.add("retries")
        delay = self.retry.backoff(failures)
        log.warning("%s API: %s; retry %d/%d in %.1fs", self.remote, error.describe(), failures,
                    self.retry.attempts - 1, delay)
        self.retry.sleep(delay)

    def _retry_after(self, response: requests.Response, reset_at: float | None) -> float:
        wait = parse_retry_after(response.headers.get("Retry-After"))
        if wait is None and reset_at is not None:
            wait = max(0.0, reset_at + self.budget.reset_margin - time.time())
        return self.retry.default_retry_after if wait is None else wait

    @property
    def rate(self) -> float:
        """Requests per second the key allows (for ETAs)."""
        return self.budget.rate(RATE)

    def _classify(self, response: requests.Response) -> ConnectorError:
        body = _json_or_none(response)
        code = message = None
        if isinstance(body, dict):
            raw_code = body.get("code") or body.get("error")
            code = str(raw_code) if raw_code is not None and not isinstance(raw_code, dict) else None
            raw_message = body.get("message") or body.get("error_description") or body.get("detail")
            message = str(raw_message) if raw_message else None
        retry_after = parse_retry_after(response.headers.get("Retry-After"))
        return classify(self.remote, status=response.status_code, code=code,
                        message=message or response.reason or "", retry_after=retry_after)

    def _with_hint(self, error: ConnectorError, what: str) -> ConnectorError:
        """Prefix the remote and call, append what the operator should do; keep the class."""
        hint = self.hints.get(error.code or "") or self.hints.get(error.status or 0)
        status = f"HTTP {error.status}" if error.status else error.code or "error"
        text = f"{self.remote} API {what}: {error.message} ({status})"
        if hint:
            text += f": {hint}"
        error.message = text
        error.args = (text,)
        if isinstance(error, Retryable) and error.retry_after is None and error.status == 429:
            error.retry_after = self.budget.peek(self.background) or None
        return error


def _json(response: requests.Response) -> Any:
    if not response.content:
        return None
    try:
        return response.json()
    except ValueError:
        raise Retryable(f"answered HTTP {response.status_code} with a body that is not JSON",
                        status=response.status_code, code="invalid_json") from None


def _json_or_none(response: requests.Response) -> Any:
    try:
        return response.json() if response.content else None
    except ValueError:
        return None


def _without_query(exc: BaseException) -> BaseException:
    """requests puts the full URL (query included: suburb, dates) into messages; keep it short."""
    text = str(exc)
    if "?" in text:
        text = text.split("?", 1)[0] + "?..."
    return type(exc)(text) if isinstance(exc, requests.RequestException) else exc
