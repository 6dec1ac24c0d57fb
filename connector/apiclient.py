"""Calling a marketplace's REST API politely: one rate budget per API key, retries, classified errors.

Marketplace clients (connector/sources/*.py) build one `ApiClient` each and call `get`/`post`;
everything about pacing and failure lives here, so every marketplace behaves the same:

    budget = shared_budget("leaditio", api_key, requests_per_minute=60, scope=base_url)
    client = ApiClient("leaditio", "https://leaditio.com/api/v1",
                       headers={"Authorization": f"Bearer {api_key}"}, budget=budget,
                       hints={401: "check LEADITIO_API_KEY"})
    page = client.get("/leads", params={"page": 1, "limit": 100})   # parsed JSON
    lead = client.get("/leads/lead_abc", missing_ok=True)            # None on 404

- `RateBudget` decides when the next request may leave. Before any response it allows the configured
  `requests_per_minute` in any sliding minute; once the API sends `X-RateLimit-Remaining` /
  `X-RateLimit-Reset` (an epoch time, or seconds from now) it follows those (the server's count is
  the truth). A 429 holds every caller
  of the budget until `Retry-After`. Budgets are shared per (remote, API key) across the process
  (`shared_budget`), so a backfill, a stats call and a webhook registration never add up to more
  than the key allows.
- `ApiClient` sends the request, retries 5xx and network errors with exponential backoff
  (`RetryPolicy`), waits out 429s, and turns a final failure's `{"code", "message"}` body into
  the error class from `connector.errors.classify`, with an operator hint appended.
- Counters (`ApiClient.counters`) say how many requests, 429s and retries happened: the backfill's
  summary and the benchmark read them.

Nothing here logs request bodies, query strings or responses (they carry phone numbers and emails).
"""

from __future__ import annotations

import hashlib
import logging
import threading
import time
from collections import deque
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

log = logging.getLogger(__name__)

Clock = Callable[[], float]


class ApiSettingsBase(BaseModel):
    """What every marketplace's `api:` block shares: pacing, timeouts and retries."""

    model_config = ConfigDict(extra="forbid")

    requests_per_minute: int = Field(default=60, gt=0, description="pace until the API's rate headers say")
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


class RateBudget:
    """How many requests one API key may still send, and when; thread-safe.

    The server counts in fixed windows and reports the count on every response; in-flight
    requests are charged up front (`acquire`) so concurrent callers never overshoot what the
    last response said was left.
    """

    def __init__(self, requests_per_minute: int, *, window: float = 60.0, reset_margin: float = 0.5,
                 clock: Clock = time.time):
        if requests_per_minute <= 0:
            raise ValueError("requests_per_minute must be positive")
        self.limit = requests_per_minute  # per `window`, until the server says otherwise
        self.window = window
        self.reset_margin = reset_margin  # seconds added to the server's reset time (clock skew)
        self._clock = clock
        self._cond = threading.Condition()
        self._sent: deque[float] = deque()  # send times within the last `window` (fallback pacing)
        self._remaining: int | None = None  # per the server, minus what we sent since
        self._reset_at: float | None = None  # server epoch time the current window ends
        self._hold_until = 0.0  # a 429's Retry-After: nobody sends before this
        self._in_flight = 0
        self.server_paced = False  # True once the API has sent rate-limit headers
        self.waited = 0.0  # seconds callers spent waiting for the budget

    # --- what callers use -------------------------------------------------------------
    def acquire(self) -> None:
        """Block until one more request may be sent, and charge it."""
        with self._cond:
            while True:
                delay = self._delay(self._clock())
                if delay <= 0:
                    break
                started = time.monotonic()
                self._cond.wait(timeout=delay)
                self.waited += time.monotonic() - started
            now = self._clock()
            self._sent.append(now)
            if self._remaining is not None:
                self._remaining -= 1
            self._in_flight += 1

    def observe(self, headers: Mapping[str, str], *, status: int | None = None) -> None:
        """Feed a response's `X-RateLimit-*` headers back (every response, errors included)."""
        with self._cond:
            self._in_flight = max(0, self._in_flight - 1)
            limit = _int(headers.get("X-RateLimit-Limit"))
            remaining = _int(headers.get("X-RateLimit-Remaining"))
            reset = _float(headers.get("X-RateLimit-Reset"))
            if reset is not None and reset < 1e9:  # some APIs send seconds until the reset, not a time
                reset += self._clock()
            if limit is not None and limit > 0:
                self.limit = limit
            if remaining is not None:
                self.server_paced = True
                # Requests still in flight may or may not be in the server's count: assume not.
                believed = max(0, remaining - self._in_flight)
                if reset is not None and (self._reset_at is None or reset > self._reset_at + 0.001):
                    self._reset_at, self._remaining = reset, believed  # a new window
                else:
                    self._remaining = believed if self._remaining is None else min(self._remaining, believed)
                    if reset is not None:
                        self._reset_at = reset
            if status == 429 and self._remaining is not None:
                self._remaining = 0
            self._cond.notify_all()

    def release(self) -> None:
        """A charged request never got an answer (network error): it is no longer in flight."""
        with self._cond:
            self._in_flight = max(0, self._in_flight - 1)
            self._cond.notify_all()

    def hold(self, seconds: float) -> None:
        """The server said 429, wait `seconds`: every caller of this budget waits."""
        with self._cond:
            self._hold_until = max(self._hold_until, self._clock() + max(0.0, seconds))
            self._cond.notify_all()

    @property
    def rate(self) -> float:
        """Requests per second this key is allowed (for ETAs)."""
        return self.limit / self.window

    def seconds_until_reset(self) -> float | None:
        with self._cond:
            return None if self._reset_at is None else max(0.0, self._reset_at - self._clock())

    # --- the decision -----------------------------------------------------------------
    def _delay(self, now: float) -> float:
        """Seconds the next request must wait (0: go now)."""
        if now < self._hold_until:
            return self._hold_until - now
        if self._reset_at is not None and now >= self._reset_at + self.reset_margin:
            # The server's window is over: a fresh allowance (its next response corrects us).
            self._reset_at, self._remaining = None, max(0, self.limit - self._in_flight)
        if self.server_paced and self._remaining is not None:
            if self._remaining > 0:
                return 0.0
            if self._reset_at is not None:
                return max(0.001, self._reset_at + self.reset_margin - now)
            # "None left" but no reset time: fall back to our own sliding window below.
        while self._sent and self._sent[0] <= now - self.window:
            self._sent.popleft()
        if len(self._sent) < self.limit:
            return 0.0
        return max(0.001, self._sent[0] + self.window - now)


def _int(value: str | None) -> int | None:
    try:
        return int(float(value)) if value is not None else None
    except ValueError:
        return None


def _float(value: str | None) -> float | None:
    try:
        return float(value) if value is not None else None
    except ValueError:
        return None


_BUDGETS: dict[tuple[str, str, str], RateBudget] = {}
_BUDGETS_LOCK = threading.Lock()


def shared_budget(remote: str, api_key: str, *, requests_per_minute: int, window: float = 60.0,
                  reset_margin: float = 0.5, scope: str = "") -> RateBudget:
    """The process-wide budget of one API key (created on first use; later settings are ignored).

    `scope` (the base URL) keeps keys of different servers apart, e.g. a sandbox and production.
    """
    key = (remote, scope, hashlib.sha256(api_key.encode()).hexdigest())  # never keep the key itself
    with _BUDGETS_LOCK:
        budget = _BUDGETS.get(key)
        if budget is None:
            budget = _BUDGETS[key] = RateBudget(requests_per_minute, window=window, reset_margin=reset_margin)
        return budget


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

    def __init__(self, remote: str, base_url: str, *, headers: Mapping[str, str], budget: RateBudget,
                 timeout: float = 30.0, retry: RetryPolicy | None = None,
                 hints: Mapping[int | str, str] | None = None):
        self.remote = remote
        self.base_url = base_url.rstrip("/")
        self.headers = {"Accept": "application/json", "User-Agent": "leads-connector", **headers}
        self.budget = budget
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
            self.budget.acquire()
            self.counters.add("requests")
            try:
                response = self.session.request(method, url, params=params, json=json, timeout=self.timeout)
            except requests.RequestException as exc:
                self.budget.release()
                error: ConnectorError = network_error(self.remote, _without_query(exc))
                failures += 1
                if retry_server_errors and failures < self.retry.attempts:
                    self._pause_before_retry(failures, error)
                    continue
                raise self._with_hint(error, f"{method} {path}") from None
            self.budget.observe(response.headers, status=response.status_code)
            if response.status_code < 400:
                return _json(response)
            if response.status_code == 404 and missing_ok:
                return None
            error = self._classify(response)
            if response.status_code == 429:
                rate_limited += 1
                self.counters.add("rate_limited")
                wait = self._retry_after(response)
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

    def _retry_after(self, response: requests.Response) -> float:
        wait = parse_retry_after(response.headers.get("Retry-After"))
        if wait is None:
            wait = self.budget.seconds_until_reset()
        return self.retry.default_retry_after if wait is None else wait

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
            error.retry_after = self.budget.seconds_until_reset()
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
