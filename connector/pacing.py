"""Rate budgets shared by every process that uses one API key: the one place that paces remote calls.

A remote API limits a key (a marketplace API key, a HubSpot token, a Salesforce org), not a process.
Four workers pacing themselves each to HubSpot's 100 requests per 10 s send 400; so the budget of a
key lives in the database (`rate_budgets`, one row per key, keyed by a SHA-256 of the remote, the
server and the key: never the key itself) and every process takes from the same row by compare and
set (`Store.change_budget`), on SQLite and PostgreSQL alike, on any number of machines.

A budget has one or more windows (HubSpot: the ten-second window and the account's day; Salesforce:
the org's rolling 24 hours; a marketplace: its per-minute limit). Each window keeps:

- `ours`: the requests granted, as (time the grant stops counting, how many) buckets. A request may
  go when fewer than `limit` grants still count: so in no window of `seconds` do more than `limit`
  go out, whichever process sends them. Buckets are 1/100 of the window wide (rounded up: a grant
  counts a little longer, never shorter), so a row stays small however high the limit.
- `foreign`: what the server's own count says was spent beyond our grants (another app on the same
  HubSpot account, a script using the same Leaditio key), until the server's reset time, or for at
  most `RECHECK` seconds where the server gives none; every answer's rate headers refresh it.
- `limit`: the configured one until the server states its own (`X-RateLimit-Limit`,
  `X-HubSpot-RateLimit-Max`, Salesforce's `api-usage=N/M`), which then wins.

A 429 `hold`s the whole key: nobody sends before its `Retry-After`.

Live work before background work: a caller marked `background` (a backfill, a reconcile, the
delivery of leads they found) may only take while more than `1 - BACKGROUND_SHARE` of a window is
left; live deliveries and operator commands may take all of it. So a backfill of 5,000 leads leaves a
fifth of HubSpot's window to the webhooks arriving meanwhile.

Takers never poll: `take` answers 0 (granted, charged) or the seconds until the window has room, and
the caller sleeps that long (the worker rests the destination, see connector/worker; `ApiClient`
sleeps) before asking the database again. A refused take writes nothing.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from connector.store import Store

Clock = Callable[[], float]
log = logging.getLogger(__name__)

BACKGROUND_SHARE = 0.8  # of each window, what background callers may use; live callers may use all
BUCKETS = 100  # buckets per window: grants count up to 1/BUCKETS of a window longer than they must
RECHECK = 900.0  # seconds a server's count is trusted without a reset time (a day-long window's usage)


@dataclass(frozen=True)
class Window:
    """One limit of a key: at most `limit` requests in any `seconds` (None: unknown until the server says).

    `resets`, for a fixed window (HubSpot's day, which ends at the account's midnight): the time the
    window containing a moment ends; grants count until then instead of for `seconds`.
    """

    name: str
    limit: int | None
    seconds: float
    resets: Callable[[float], float] | None = None

    def expiry(self, now: float) -> float:
        if self.resets is not None:
            return self.resets(now)
        width = self.seconds / BUCKETS
        return math.ceil((now + self.seconds) / width) * width


@dataclass(frozen=True)
class Refused:
    """A take that did not fit: wait `wait` seconds; `window` is the one that is full ("hold": a 429)."""

    wait: float
    window: str


# --- the state of one key, as stored (JSON), and the decisions on it --------------------------------
def _window_state(state: dict[str, Any], spec: Window, now: float) -> dict[str, Any]:
    """The stored state of `spec` in `state`, with what no longer counts at `now` dropped."""
    win = state.setdefault("w", {}).setdefault(spec.name, {"ours": [], "foreign": 0, "until": 0.0})
    win["ours"] = [[at, n] for at, n in win["ours"] if at > now]
    if win["until"] <= now:
        win["foreign"], win["until"] = 0, 0.0
    return win


def _limit(win: dict[str, Any], spec: Window) -> int | None:
    return win["limit"] if win.get("limit") is not None else spec.limit


def busy(win: dict[str, Any]) -> int:
    """Requests that count against the window now: ours and the server's view of the rest."""
    return sum(n for _, n in win["ours"]) + win["foreign"]


def _room_in(win: dict[str, Any], cap: int, now: float) -> float:
    """Seconds until one more request fits under `cap` (0: now)."""
    need = busy(win) - cap + 1
    if need <= 0:
        return 0.0
    freed = 0
    for at, n in sorted(win["ours"] + ([[win["until"], win["foreign"]]] if win["foreign"] else [])):
        freed += n
        if freed >= need:
            return at - now
    return max(win["until"], max((at for at, _ in win["ours"]), default=now)) - now  # cap <= 0: never; bounded


def cap_for(limit: int, background: bool) -> int:
    return max(1, math.floor(limit * BACKGROUND_SHARE)) if background else limit


def take(state: dict[str, Any], windows: Sequence[Window], now: float, background: bool = False) -> Refused | None:
    """Charge one request to every window of `state` (changed in place), or say how long to wait (unchanged)."""
    hold = state.get("hold", 0.0)
    if hold > now:
        return Refused(hold - now, "hold")
    refused: Refused | None = None
    for spec in windows:
        win = _window_state(state, spec, now)
        limit = _limit(win, spec)
        if limit is None:
            continue
        wait = _room_in(win, cap_for(limit, background), now)
        if wait > 0 and (refused is None or wait > refused.wait):
            refused = Refused(wait, spec.name)
    if refused is not None:
        return refused
    for spec in windows:
        win = state["w"][spec.name]
        at = spec.expiry(now)
        if win.get("reset", 0.0) > now:  # the server counts in fixed windows: ours ends with its window
            at = min(at, win["reset"])
        _add(win, at, 1)
    return None


def _add(win: dict[str, Any], at: float, n: int) -> None:
    for bucket in win["ours"]:
        if bucket[0] == at:
            bucket[1] += n
            return
    win["ours"].append([at, n])
    win["ours"].sort()


def feed(state: dict[str, Any], spec: Window, now: float, *, used: int | None = None, limit: int | None = None,
         reset_at: float | None = None, margin: float = 0.0) -> bool:
    """What the server said about window `spec` (its limit, how much is used, when it resets); True if
    the stored state must change.

    Our grants are an upper bound of what the server counted of ours (a grant counts from before the
    request leaves until after the server stops counting it), so whatever the server counts beyond them
    was spent by someone else: that is `foreign`.
    """
    win = _window_state(state, spec, now)
    changed = False
    if limit is not None and limit > 0 and win.get("limit") != limit:
        win["limit"], changed = limit, True
    if reset_at is not None and reset_at + margin > now and abs(win.get("reset", 0.0) - (reset_at + margin)) > 0.001:
        # A fixed window (Leaditio's X-RateLimit-Reset): every grant we hold was sent in this window or
        # the one before, and the server forgets both at its reset: so do we.
        win["reset"], changed = reset_at + margin, True
        grants, win["ours"] = win["ours"], []
        for at, n in grants:
            _add(win, min(at, win["reset"]), n)
    if used is not None:
        foreign = max(0, used - sum(n for _, n in win["ours"]))
        until = reset_at + margin if reset_at is not None else now + min(spec.seconds, RECHECK)
        if foreign != win["foreign"] or (foreign and abs(until - win["until"]) > min(60.0, spec.seconds / 10)):
            win["foreign"], win["until"] = foreign, (until if foreign else 0.0)
            changed = True
    return changed


def restamp(state: dict[str, Any], spec: Window, granted_at: float, now: float) -> bool:
    """An answer came for the request granted at `granted_at`: it reached the server before `now`, so
    the server stops counting it before `now + seconds`. Its grant counts until then (True), however
    long it took to arrive: a slow request can never let the next one in too early."""
    if spec.resets is not None:
        return False
    win = _window_state(state, spec, now)
    if win.get("reset", 0.0) > now:
        return False  # a fixed window: the server's reset time already says when it stops counting
    old, new = spec.expiry(granted_at), spec.expiry(now)
    for bucket in win["ours"]:
        if bucket[0] == old and new > old:
            bucket[1] -= 1
            win["ours"] = [b for b in win["ours"] if b[1] > 0]
            _add(win, new, 1)
            return True
    return False


def hold(state: dict[str, Any], until: float) -> bool:
    if until <= state.get("hold", 0.0):
        return False
    state["hold"] = until
    return True


# --- a key's budget, kept in the database -------------------------------------------------------
def key_digest(remote: str, scope: str, api_key: str) -> str:
    """The row's key: never the API key itself."""
    return hashlib.sha256(f"{remote}\x1f{scope}\x1f{api_key}".encode()).hexdigest()


class Budget:
    """The shared budget of one API key. Thread-safe; every process using the key shares the row."""

    def __init__(self, budgets: Budgets, key: str, label: str, windows: Sequence[Window], *,
                 reset_margin: float = 0.5):
        self.budgets = budgets
        self.key = key  # key_digest(...)
        self.label = label  # "hubspot", "leaditio": shown by `status`, no secret in it
        self.windows = {w.name: w for w in windows}
        self.reset_margin = reset_margin  # seconds added to a server's reset time (clock skew)
        self.waited = 0.0  # seconds this process's callers slept for the budget (benchmarks)
        self._known: dict[str, Any] = {}  # the row as this process last saw it (feeds skip needless writes)
        self._local = threading.local()  # per thread: when its last request was granted (for `restamp`)

    # --- taking ---------------------------------------------------------------------------
    def take(self, background: bool = False) -> Refused | None:
        """Charge one request now (None), or say how long until there is room (nothing charged)."""
        windows = list(self.windows.values())

        def decide(state: dict[str, Any], now: float) -> tuple[bool, Refused | None]:
            refused = take(state, windows, now, background)
            if refused is None:
                self._local.granted_at = now
            return refused is None, refused

        return self.budgets.change(self, decide)

    def peek(self, background: bool = False) -> float:
        """Seconds until a take would fit (0: now), without charging: a read, never a write."""
        state, now = self.budgets.read(self)
        refused = take(state, list(self.windows.values()), now, background)
        return refused.wait if refused else 0.0

    def acquire(self, background: bool = False, sleep: Callable[[float], None] = time.sleep) -> None:
        """Take, sleeping until the window has room (for callers with no worker to rest them: the
        marketplace API client under `backfill` and the account commands)."""
        while (refused := self.take(background)) is not None:
            wait = max(0.001, refused.wait)
            self.waited += wait
            sleep(wait)

    # --- what the server said -----------------------------------------------------------------
    def feed(self, window: str, *, used: int | None = None, remaining: int | None = None,
             limit: int | None = None, reset_at: float | None = None, answered: bool = False,
             slack: float = 0.0) -> None:
        """A response's rate-limit headers for `window`: its limit, and what is used or remaining.

        `answered`: this thread's last granted request got its answer now: its grant then counts for a
        whole window from now (`restamp`), for a rolling window the server counts by arrival. An answer
        within `slack` seconds of the grant needs no restamp (our window is that much longer than the
        server's), which spares the database a write per request.
        """
        spec = self.windows[window]
        if used is None and remaining is not None:
            stated = limit if limit is not None else _limit(self._known.get("w", {}).get(window, {}), spec)
            used = None if stated is None else max(0, stated - remaining)
        granted_at = getattr(self._local, "granted_at", None) if answered else None
        self._local.granted_at = None
        if granted_at is not None and self.budgets.clock() - granted_at <= slack:
            granted_at = None
        if granted_at is None and (used is None and limit is None or used is not None and
                                   not self._worth_writing(window, used, limit, reset_at)):
            return

        def decide(state: dict[str, Any], now: float) -> tuple[bool, None]:
            fed = feed(state, spec, now, used=used, limit=limit, reset_at=reset_at, margin=self.reset_margin)
            moved = granted_at is not None and restamp(state, spec, granted_at, now)
            return fed or moved, None

        self.budgets.change(self, decide)

    def _worth_writing(self, window: str, used: int, limit: int | None, reset_at: float | None) -> bool:
        """Skip the database when the answer says nothing new: no foreign use known or seen, same limit
        and reset."""
        win = self._known.get("w", {}).get(window)
        if win is None or (limit is not None and win.get("limit") != limit):
            return True
        if reset_at is not None and abs(win.get("reset", 0.0) - (reset_at + self.reset_margin)) > 0.001:
            return True
        counted = sum(n for at, n in win["ours"] if at > self.budgets.clock())
        return win["foreign"] > 0 or used > counted

    def hold(self, seconds: float) -> None:
        """The server answered 429: nobody using this key sends for `seconds`."""
        self.budgets.change(self, lambda state, now: (hold(state, now + max(0.0, seconds)), None))

    # --- for ETAs and reports -------------------------------------------------------------------
    def limit(self, window: str) -> int | None:
        spec = self.windows[window]
        return _limit(self._known.get("w", {}).get(window, {}), spec)

    def rate(self, window: str) -> float:
        """Requests per second the window allows (0 if unknown)."""
        limit = self.limit(window)
        return (limit or 0) / self.windows[window].seconds

    def remember(self, state: dict[str, Any]) -> None:
        self._known = state


class Budgets:
    """Every key's budget, bound to one store; one per process (`Runtime.budgets`).

    Without a store (a destination built on its own, in a test or a one-off script) the budgets
    live in a private in-memory SQLite database: the same code, shared only within the process.
    """

    def __init__(self, store: Store, clock: Clock = time.time):
        self.store = store
        self.clock = clock
        self._budgets: dict[str, Budget] = {}
        self._lock = threading.Lock()  # one change at a time per process: fewer lost compare-and-sets

    def budget(self, remote: str, api_key: str, windows: Sequence[Window], *, scope: str = "",
               reset_margin: float = 0.5) -> Budget:
        """The budget of `api_key` at `remote` (`scope`: the server, so a sandbox and production differ)."""
        key = key_digest(remote, scope, api_key)
        with self._lock:
            budget = self._budgets.get(key)
            if budget is None or list(budget.windows.values()) != list(windows):
                budget = self._budgets[key] = Budget(self, key, remote, windows, reset_margin=reset_margin)
            return budget

    def change(self, budget: Budget, decide: Callable[[dict[str, Any], float], tuple[Any, Any]]) -> Any:
        """Run `decide(state, now) -> (write?, result)` on the key's row, atomically; returns result."""
        def step(raw: str | None) -> tuple[str | None, Any]:
            state = json.loads(raw) if raw else {}
            write, result = decide(state, self.clock())
            budget.remember(state)
            return (json.dumps(state, separators=(",", ":")) if write else None), result

        with self._lock:
            return self._unmigrated(lambda: self.store.change_budget(budget.key, budget.label, step))

    def read(self, budget: Budget) -> tuple[dict[str, Any], float]:
        raw = self._unmigrated(lambda: self.store.read_budget(budget.key))
        state = json.loads(raw) if raw else {}
        budget.remember(json.loads(raw) if raw else {})
        return state, self.clock()

    def _unmigrated(self, call: Callable[[], Any]) -> Any:
        """A database not yet upgraded (`connector crm setup` run before `connector db upgrade`) has no
        rate_budgets table: this process then keeps its budgets to itself, and says so once."""
        try:
            return call()
        except self.store.database_errors as exc:
            if "rate_budgets" not in str(exc) or self.store is local_budgets().store:
                raise
            log.warning("the database has no rate_budgets table (run `connector db upgrade`): rate budgets "
                        "are not shared with other processes until it does")
            self.store = local_budgets().store
            return call()


_LOCAL: Budgets | None = None
_LOCAL_LOCK = threading.Lock()


def local_budgets() -> Budgets:
    """The process's budgets when no store was given (see `Budgets`)."""
    global _LOCAL
    with _LOCAL_LOCK:
        if _LOCAL is None:
            from connector.store import Store

            store = Store("sqlite://")
            store.create_budget_table()
            _LOCAL = Budgets(store)
        return _LOCAL


def header_int(headers: Mapping[str, str], name: str) -> int | None:
    value = headers.get(name)
    try:
        return int(float(value)) if value is not None else None
    except ValueError:
        return None


def header_float(headers: Mapping[str, str], name: str) -> float | None:
    value = headers.get(name)
    try:
        return float(value) if value is not None else None
    except ValueError:
        return None
