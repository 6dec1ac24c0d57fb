"""Running the connector: `serve` (all in one, for local use), `worker`, and `db upgrade|prune`."""

from __future__ import annotations

import logging
import os
import signal
import threading

import click
from werkzeug.serving import make_server

from connector.cli.app import Context, console, main, pass_ctx
from connector.durations import seconds
from connector.errors import ConfigError
from connector.logs import setup_logging
from connector.web import create_app, warm_up
from connector.worker import drain_workers, run_workers

log = logging.getLogger("connector")
SERVE_BACKLOG_PER_THREAD = 20  # deliveries stored by `serve` and not yet claimed, per worker thread, before it paces


def warn_if_ephemeral(ctx: Context) -> None:
    """Heroku dynos lose their disk on every restart: SQLite there loses leads."""
    if os.environ.get("DYNO") and ctx.config.database.url.startswith("sqlite"):
        banner = ("!" * 78 + "\nWARNING: running on an ephemeral host (DYNO is set) with SQLite.\n"
                  "Every restart wipes the disk: queued and stored LEADS WILL BE LOST.\n"
                  "Attach PostgreSQL and set DATABASE_URL.\n" + "!" * 78)
        click.echo(banner, err=True)
        log.error("SQLite on an ephemeral host: leads will be lost on restart; set DATABASE_URL")


def report_mapping_problems(ctx: Context) -> None:
    """Each mapping that does not load, as `file:line: key: problem`, at start-up. The worker still
    starts: that destination waits (paused) until its file is fixed, the others deliver."""
    for name, destination in ctx.config.destinations.items():
        if not destination.mapping:
            continue
        try:
            ctx.runtime.mapping(name)
        except ConfigError as exc:
            log.error("destination %s will wait until its mapping is fixed: %s", name, exc)


def _stop_on_signals(stop: threading.Event) -> None:
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())


@main.command()
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on.")
@click.option("--port", default=lambda: int(os.environ.get("PORT", "8000")), show_default="$PORT or 8000",
              type=int, help="Port to listen on.")
@click.option("--threads", type=int, default=None, help="Worker threads (default: worker.threads in config).")
@pass_ctx
def serve(ctx: Context, host: str, port: int, threads: int | None) -> None:
    """Receiver and worker in one process, for local use (creates the database if needed)."""
    setup_logging()
    warn_if_ephemeral(ctx)
    report_mapping_problems(ctx)
    ctx.store.upgrade()
    stop = threading.Event()
    count = threads or ctx.config.worker.threads
    # A burst of webhooks must not starve the workers of the one interpreter they share (wakeup.Doorbell).
    ctx.store.doorbell.pace_backlog = SERVE_BACKLOG_PER_THREAD * count
    run_workers(ctx.runtime, count, stop)
    app = create_app(ctx.runtime)
    warm_up(app)
    server = make_server(host, port, app, threaded=True)
    log.info("listening on http://%s:%d/webhooks/<source> (sources: %s); Ctrl-C to stop", host, port,
             ", ".join(ctx.config.sources))
    signal.signal(signal.SIGTERM, lambda *_: threading.Thread(target=server.shutdown).start())
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        stop.set()
        _send_notices(ctx)
        log.info("stopped")


@main.command()
@click.option("--threads", type=int, default=None, help="Worker threads (default: worker.threads in config).")
@click.option("--drain", is_flag=True, help="Deliver what is due, then exit.")
@click.option("--timeout", type=float, default=600.0, show_default=True, help="With --drain: give up after this.")
@pass_ctx
def worker(ctx: Context, threads: int | None, drain: bool, timeout: float) -> None:
    """Deliver queued leads to their destinations (run as many as you like, anywhere)."""
    setup_logging()
    warn_if_ephemeral(ctx)
    report_mapping_problems(ctx)
    count = threads or ctx.config.worker.threads
    if drain:
        drain_workers(ctx.runtime, count, timeout)
        _send_notices(ctx)
        return
    stop = threading.Event()
    _stop_on_signals(stop)
    started = run_workers(ctx.runtime, count, stop)
    log.info("worker started with %d threads for %s", count, ", ".join(ctx.config.destinations))
    while not stop.wait(1.0):
        pass
    for thread in started:
        thread.join(timeout=30)
    _send_notices(ctx)
    log.info("worker stopped")


def _send_notices(ctx: Context, timeout: float = 10.0) -> None:
    """Speed-to-lead notices still queued go out before the process ends (for at most `timeout`)."""
    notifier = ctx.runtime.notifier
    if notifier is not None and not notifier.flush(timeout):
        log.warning("stopped with speed-to-lead notices unsent: the channel did not answer within %.0f s", timeout)


@main.group()
def db() -> None:
    """Database schema and housekeeping."""


@db.command()
@pass_ctx
def upgrade(ctx: Context) -> None:
    """Create or migrate the database schema (the Procfile's release step)."""
    revision = ctx.store.upgrade()
    console.print(f"database is at revision {revision}")


@db.command()
@click.option("--older-than", default=None, help="e.g. 30d (default: server.dedupe_days, at least 7 days).")
@pass_ctx
def prune(ctx: Context, older_than: str | None) -> None:
    """Forget finished events (never pending ones, never dead letters) older than the dedupe window, and erase
    personal data past privacy.keep_personal_data / keep_dead_letters (retention, as the worker does daily)."""
    from connector.privacy.retention import apply_retention

    days = ctx.config.server.dedupe_days
    horizon = max(seconds(older_than), 7 * 86400) if older_than else days * 86400
    removed = ctx.store.prune(horizon)
    console.print(f"removed {removed} events older than {horizon / 86400:.0f} days")
    report = apply_retention(ctx.runtime)
    details = ", ".join(f"{place}: {n}" for place, n in report.places.items() if n)
    console.print(f"retention: personal data of {report.events} events replaced by markers"
                  + (f" ({details})" if details else ""), highlight=False)
