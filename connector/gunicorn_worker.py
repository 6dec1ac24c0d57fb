"""The gunicorn worker the Procfile's web process runs: gevent, answering HTTP mistakes as JSON.

Why gevent: a gthread worker gives each connection a thread from the moment its first byte arrives
until its request is read, so 16 clients that send headers one byte a second (one per thread of
4 workers x 4 threads) held every thread and no webhook was answered. Under gevent a connection
that is still sending costs one greenlet, not a thread, and each process serves up to
`worker_connections` of them at once; measured side by side, the receiver's throughput did not drop
(README, "Running in production").

Why a subclass: gunicorn answers a request it cannot parse (bad chunked framing, a header block
over its limits) with an HTML page. Marketplaces, and our own error contract, expect
`{"code", "message"}`; this writes that instead, with the status gunicorn chose.

Why it listens late: with `reuse_port` (gunicorn_conf.py) gunicorn opens each worker's own listening
socket right after the fork, before the worker has imported the app. The kernel spreads new
connections over every socket of the port at once, so a worker still starting (a second or more on a
busy machine) was handed connections it could not answer yet: the first 200 webhooks after a start had
a p99 of 1.1 to 3.0 s. This worker closes that socket at once and opens its own only when the app is
loaded and warmed (`post_worker_init`, connector.web.warm_up), just before it serves.

This module imports nothing of the connector: gevent patches the standard library when the worker
starts, and modules that took names from `ssl` before that (urllib3, through the app) stay unpatched.
"""

from __future__ import annotations

import json
import socket
from typing import Any

from gunicorn import sock
from gunicorn.http.errors import (
    ConfigurationProblem,
    InvalidResponseHeader,
    InvalidResponseHeaderName,
    LimitRequestHeaders,
    LimitRequestLine,
    ParseException,
)
from gunicorn.util import close_on_exec, write_nonblock
from gunicorn.workers.ggevent import GeventWorker

# gunicorn's parse errors -> (status, reason, code); anything else it cannot parse is a 400 (gunicorn
# itself says 501 to a Transfer-Encoding it does not know: that is still the sender's mistake).
_ANSWERS: list[tuple[type[Exception], int, str, str]] = [
    (LimitRequestHeaders, 431, "Request Header Fields Too Large", "headers_too_large"),
    (LimitRequestLine, 414, "URI Too Long", "uri_too_long"),
]


def error_response(exc: ParseException) -> bytes:
    """The whole HTTP answer to a request gunicorn could not parse."""
    status, reason, code = 400, "Bad Request", "invalid_request"
    for kind, status_, reason_, code_ in _ANSWERS:
        if isinstance(exc, kind):
            status, reason, code = status_, reason_, code_
            break
    body = json.dumps({"code": code, "message": f"the request could not be read: {exc}"}).encode()
    head = (f"HTTP/1.1 {status} {reason}\r\nConnection: close\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\n\r\n")
    return head.encode("latin-1") + body


class ReceiverWorker(GeventWorker):
    """gunicorn's gevent worker; requests it cannot parse are answered as JSON, not HTML."""

    listen_late = False

    def init_process(self) -> None:
        if self.cfg.reuse_port and self.sockets:  # this worker's own sockets: none of them is shared
            for listener in self.sockets:
                listener.close()
            self.sockets = []
            self.listen_late = True
        super().init_process()  # loads the app, runs post_worker_init (the warm-up), then run()

    def run(self) -> None:
        if self.listen_late:  # as GeventWorker.patch() wraps the sockets gunicorn made, with gevent's socket
            self.sockets = [socket.socket(listener.FAMILY, socket.SOCK_STREAM, fileno=listener.sock.detach())
                            for listener in sock.create_sockets(self.cfg, self.log)]
            for listener in self.sockets:
                close_on_exec(listener.fileno())
        super().run()

    def handle_error(self, req: Any, client: Any, addr: Any, exc: BaseException) -> None:
        # A header our app tried to send, or gunicorn's own settings, are server faults: gunicorn's 500.
        ours = (ConfigurationProblem, InvalidResponseHeader, InvalidResponseHeaderName)
        if not isinstance(exc, ParseException) or isinstance(exc, ours):
            super().handle_error(req, client, addr, exc)
            return
        self.log.warning("request from %s refused: %s", (addr or ("?",))[0], exc)
        try:
            write_nonblock(client, error_response(exc))
        except OSError:
            self.log.debug("could not send the error answer")
