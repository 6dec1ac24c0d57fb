"""Run any WSGI app on 127.0.0.1 in a thread, over real HTTP (or HTTPS with a given SSL context)."""

from __future__ import annotations

import ssl
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from werkzeug.serving import make_server


@contextmanager
def serve(app, ssl_context: ssl.SSLContext | None = None) -> Iterator[str]:  # noqa: ANN001
    server = make_server("127.0.0.1", 0, app, threaded=True, ssl_context=ssl_context)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    scheme = "https" if ssl_context else "http"
    try:
        yield f"{scheme}://127.0.0.1:{server.server_port}"
    finally:
        server.shutdown()
        thread.join(timeout=5)


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
