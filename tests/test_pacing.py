"""The shared rate budgets (connector.pacing) on SQLite and PostgreSQL: take, refill, the server's headers,
429 holds, live before background, and the promise itself: however many processes take at once, no
window ever holds more grants than the limit (a hypothesis property, with real concurrent takers)."""

from __future__ import annotations

import threading
import uuid
from collections.abc import Iterator

import pytest
import sqlalchemy as sa
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from connector.pacing import BACKGROUND_SHARE, Budget, Budgets, Window, restamp, take
from connector.store import Store
from connector.store.schema import rate_budgets


class Clock:
    """Time that moves only when told to, shared by every simulated process."""

    def __init__(self, now: float = 1_000_000.0):
        self.now = now

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def db(database_url: str) -> Iterator[str]:
    store = Store(database_url)
    store.upgrade()
    store.dispose()
    yield database_url


def processes(url: str, clock: Clock, count: int) -> list[Budgets]:
    """`count` processes' budgets on one database: each with a store (an engine, a pool) of its own."""
    return [Budgets(Store(url), clock=clock) for _ in range(count)]


def budget_of(budgets: Budgets, key: str, limit: int | None = 5, seconds: float = 10.0) -> Budget:
    return budgets.budget("hubspot", key, [Window("burst", limit, seconds)])


def test_take_until_the_limit_then_wait_until_the_first_grant_leaves_the_window(db: str) -> None:
    clock = Clock()
    budgets, = processes(db, clock, 1)
    budget = budget_of(budgets, "pat-1")
    for _ in range(5):
        assert budget.take() is None
        clock.now += 1.0
    refused = budget.take()
    assert refused is not None and refused.window == "burst"
    assert refused.wait == pytest.approx(5.0, abs=0.11)  # the first grant (t=0) counts until t=10
    clock.now += refused.wait
    assert budget.take() is None  # refilled: one more
    assert budget.take() is not None
    budgets.store.dispose()


def test_two_processes_share_one_row_and_the_key_is_never_stored(db: str) -> None:
    clock = Clock()
    first, second = processes(db, clock, 2)
    api_key = f"pat-na1-{uuid.uuid4()}"
    a, b = budget_of(first, api_key), budget_of(second, api_key)
    for _ in range(3):
        assert a.take() is None
    for _ in range(2):
        assert b.take() is None
    assert a.take() is not None and b.take() is not None  # 5 between them
    with first.store.engine.connect() as conn:
        rows = [dict(r._mapping) for r in conn.execute(sa.select(rate_budgets))]
    mine = [r for r in rows if r["key"] == a.key]
    assert len(mine) == 1 and mine[0]["label"] == "hubspot"
    assert all(api_key not in str(value) for row in rows for value in row.values())
    for budgets in (first, second):
        budgets.store.dispose()


def test_background_takers_leave_a_reserve_for_live_ones(db: str) -> None:
    clock = Clock()
    budgets, = processes(db, clock, 1)
    budget = budget_of(budgets, "pat-bg", limit=10)
    granted = 0
    while budget.take(background=True) is None:
        granted += 1
    assert granted == int(10 * BACKGROUND_SHARE)
    assert budget.take() is None and budget.take() is None  # live work still gets the rest
    assert budget.take() is not None
    budgets.store.dispose()


def test_the_servers_headers_feed_the_budget(db: str) -> None:
    clock = Clock()
    first, second = processes(db, clock, 2)
    budget = budget_of(first, "pat-feed", limit=100)
    assert budget.take() is None
    # Another app on the account spent 60 of HubSpot's 80: the server's count beyond our one grant is foreign.
    budget.feed("burst", remaining=19, limit=80)
    other = budget_of(second, "pat-feed", limit=100)
    granted = 0
    while other.take() is None:
        granted += 1
    assert granted == 19  # 80 - 60 foreign - 1 ours
    assert other.limit("burst") == 80  # the server's limit won over the configured 100
    for budgets in (first, second):
        budgets.store.dispose()


def test_a_fixed_windows_reset_time_refills_at_the_reset(db: str) -> None:
    clock = Clock()
    budgets, = processes(db, clock, 1)
    budget = budgets.budget("leaditio", "key-1", [Window("rate", 60, 60.0)], reset_margin=0.5)
    assert budget.take() is None
    budget.feed("rate", limit=60, remaining=0, reset_at=clock.now + 2.0)  # Leaditio: X-RateLimit-Reset
    refused = budget.take()
    assert refused is not None and refused.wait == pytest.approx(2.5)
    clock.now += 2.5
    assert budget.take() is None  # the window reset: not 60 s after our grant
    budgets.store.dispose()


def test_a_429_holds_every_process_until_its_wait_is_over(db: str) -> None:
    clock = Clock()
    first, second = processes(db, clock, 2)
    budget_of(first, "pat-429").hold(3.0)
    refused = budget_of(second, "pat-429").take()
    assert refused is not None and refused.window == "hold" and refused.wait == pytest.approx(3.0)
    clock.now += 3.0
    assert budget_of(second, "pat-429").take() is None
    for budgets in (first, second):
        budgets.store.dispose()


def test_an_answer_restamps_the_grant_so_a_late_arrival_cannot_overlap_the_next() -> None:
    spec = Window("burst", 1, 10.0)
    state: dict = {}
    assert take(state, [spec], 0.0) is None
    assert restamp(state, spec, 0.0, 2.0)  # answered 2 s later: it may have arrived at 1.9 s
    refused = take(state, [spec], 10.0)
    assert refused is not None and refused.wait == pytest.approx(2.0, abs=0.11)


def test_a_refused_take_writes_nothing(db: str) -> None:
    clock = Clock()
    budgets, = processes(db, clock, 1)
    budget = budget_of(budgets, "pat-quiet", limit=1)
    assert budget.take() is None
    with budgets.store.engine.connect() as conn:
        before = conn.execute(sa.select(rate_budgets.c.version).where(rate_budgets.c.key == budget.key)).scalar()
    for _ in range(5):
        assert budget.take() is not None
    with budgets.store.engine.connect() as conn:
        after = conn.execute(sa.select(rate_budgets.c.version).where(rate_budgets.c.key == budget.key)).scalar()
    assert before == after
    budgets.store.dispose()


LIMIT, SECONDS = 4, 1.0
steps = st.lists(st.tuples(st.integers(min_value=0, max_value=6),  # takers at once in this step
                           st.floats(min_value=0.0, max_value=0.7),  # then time moves on this far
                           st.booleans(),  # background takers?
                           st.integers(min_value=-1, max_value=LIMIT)),  # a server's "remaining" (-1: none)
                 min_size=1, max_size=10)


@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(schedule=steps)
def test_concurrent_takers_never_exceed_the_limit_in_any_window(db: str, schedule: list) -> None:
    clock = Clock()
    pool = processes(db, clock, 3)  # three processes, each taking from several threads at once
    key = f"pat-{uuid.uuid4()}"
    budgets = [budget_of(p, key, limit=LIMIT, seconds=SECONDS) for p in pool]
    grants: list[float] = []
    lock = threading.Lock()

    def taker(budget: Budget, background: bool) -> None:
        if budget.take(background) is None:
            with lock:
                grants.append(clock.now)

    try:
        for takers, advance, background, remaining in schedule:
            threads = [threading.Thread(target=taker, args=(budgets[n % 3], background)) for n in range(takers)]
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join()
            if remaining >= 0:
                budgets[0].feed("burst", remaining=remaining, limit=LIMIT, answered=True)
            clock.now += advance
    finally:
        for p in pool:
            p.store.dispose()
    for at in grants:  # every window (at - SECONDS, at] that ends on a grant holds at most LIMIT grants
        assert sum(1 for other in grants if at - SECONDS < other <= at) <= LIMIT
