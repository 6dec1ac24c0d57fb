"""The one way to start and stop a fake: any WSGI app on 127.0.0.1, over real HTTP (or HTTPS with a
`FakeCA`), in a daemon thread or in the foreground for a standalone fake.

Shutdown waits for the serving loop to notice, which werkzeug checks every `poll_interval` (0.5 s by
default): every test that starts a fake would pay that at teardown, so the loop polls every 50 ms.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from typing import Any

from werkzeug.serving import WSGIRequestHandler, make_server

from fakes.tls import FakeCA

POLL_INTERVAL = 0.05


class QuietHandler(WSGIRequestHandler):
    """No access-log line per request (a benchmark sends thousands)."""

    def log_request(self, *args: Any, **kwargs: Any) -> None:
        pass


class Server:
    """One WSGI app bound to 127.0.0.1:`port` (0: an ephemeral port) as soon as it is built."""

    def __init__(self, app: Any, *, tls: FakeCA | None = None, port: int = 0, quiet: bool = False) -> None:
        self._server = make_server("127.0.0.1", port, app, threaded=True,
                                   ssl_context=tls.server_context() if tls else None,
                                   request_handler=QuietHandler if quiet else None)
        self._thread: threading.Thread | None = None
        self.url = f"{'https' if tls else 'http'}://127.0.0.1:{self._server.server_port}"

    def start(self) -> Server:
        """Serve in a daemon thread; returns self."""
        self._thread = threading.Thread(target=self._server.serve_forever,
                                        kwargs={"poll_interval": POLL_INTERVAL}, daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving (within one poll interval) and free the port."""
        if self._thread is not None:
            self._server.shutdown()
            self._thread.join(timeout=5)
            self._thread = None
        self._server.server_close()

    def run(self) -> None:
        """Serve in the foreground until Ctrl-C (a standalone fake, e.g. for a benchmark's child process)."""
        with suppress(KeyboardInterrupt):
            self._server.serve_forever(poll_interval=POLL_INTERVAL)
        self._server.server_close()

    def __enter__(self) -> Server:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


@contextmanager
def serve(app: Any, *, tls: FakeCA | None = None, quiet: bool = False) -> Iterator[str]:
    """Serve `app` for the length of the block; yields its base URL."""
    with Server(app, tls=tls, quiet=quiet) as server:
        yield server.url


class ServedFake:
    """A fake API built as a WSGI `app`, served on demand."""

    app: Any
    url: str = ""

    @contextmanager
    def running(self) -> Iterator[str]:
        """Serve on an ephemeral port; yields the base URL (also kept in `self.url`)."""
        with serve(self.app) as url:
            self.url = url
            yield url
