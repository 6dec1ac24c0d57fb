"""A generic CRM that takes one lead per POST and upserts it by the X-Lead-Key header.

Tests script its answers: `fail_next(503, times=2)`, `answer_with(400, {...})`, a per-request delay,
`drop_next()` (the connection closes before anything is written) and `lose_next_answer()` (the
lead is written, then the connection closes before the answer leaves).
It counts every request, so a test can tell "sent twice" from "stored twice".

It honours `Idempotency-Key` the way Stripe's API v1 does: "Stripe saves the status code and body
of the first request made with a given idempotency key after endpoint execution begins. Retries
with the same key return the saved response" (docs.stripe.com/api/idempotent_requests), writing
nothing, and a key reused with different parameters is refused with 400 `idempotency_error`.
Answers given before execution begins (a gateway's 5xx, a rate limiter's 429, a dropped
connection) are not saved, so scripted failures here are not either.
"""

from __future__ import annotations

import contextlib
import json
import socket
import threading
import time
from collections import Counter
from typing import Any

from flask import Flask, Response, jsonify, request

DROP = -1  # a scripted "status": close the connection without an answer, before executing
LOSE = -2  # execute (write, save the answer), then close the connection without an answer


class FakeCrm:
    def __init__(self) -> None:
        self.records: dict[str, dict[str, Any]] = {}
        self.creates: Counter[str] = Counter()  # records created per key: exactly once means 1
        self.requests: list[dict[str, Any]] = []
        self.script: list[tuple[int, dict[str, Any], dict[str, str]]] = []
        self.saved: dict[str, tuple[bytes, int, dict[str, Any]]] = {}  # idempotency key -> (body, status, answer)
        self.replays = 0
        self.delay = 0.0
        self.started = 0  # requests that arrived, counted before the delay
        self.lock = threading.Lock()
        self.app = self._build()

    def fail_next(self, status: int, times: int = 1, body: dict[str, Any] | None = None,
                  headers: dict[str, str] | None = None) -> None:
        self.script += [(status, body or {"code": "error", "message": f"scripted {status}"}, headers or {})] * times

    def drop_next(self, times: int = 1) -> None:
        self.script += [(DROP, {}, {})] * times

    def lose_next_answer(self, times: int = 1) -> None:
        self.script += [(LOSE, {}, {})] * times

    def _build(self) -> Flask:
        app = Flask("fake_crm")

        @app.route("/leads", methods=["POST", "PUT", "PATCH"])
        def upsert():  # noqa: ANN202
            self.started += 1
            if self.delay:
                time.sleep(self.delay)
            with self.lock:
                body = request.get_data()
                self.requests.append({"headers": dict(request.headers), "body": body})
                status, scripted, headers = self.script.pop(0) if self.script else (0, {}, {})
                if status == DROP:
                    return _drop()
                if status > 0:
                    return jsonify(scripted), status, headers
                key = request.headers.get("Idempotency-Key")
                if key and key in self.saved:
                    first_body, saved_status, answer = self.saved[key]
                    if first_body != body:
                        return jsonify(code="idempotency_error", message="Keys for idempotent requests can only be "
                                       "used with the same parameters they were first used with."), 400
                    self.replays += 1
                    return jsonify(answer), saved_status, {"Idempotent-Replayed": "true"}
                lead_key = request.headers["X-Lead-Key"]
                created = lead_key not in self.records
                self.records.setdefault(lead_key, {}).update(json.loads(body))
                self.creates[lead_key] += created
                answer, saved_status = {"id": f"crm-{lead_key}", "created": created}, 201 if created else 200
                if key:
                    self.saved[key] = (body, saved_status, answer)
                if status == LOSE:
                    return _drop()
                return jsonify(answer), saved_status

        @app.delete("/leads/<crm_id>")
        def erase(crm_id: str) -> Any:  # `connector forget --crm` with privacy.erase.<name>.url
            with self.lock:
                self.requests.append({"headers": dict(request.headers), "body": b"", "method": "DELETE",
                                      "path": request.path})
                status, scripted, headers = self.script.pop(0) if self.script else (0, {}, {})
                if status > 0:
                    return jsonify(scripted), status, headers
                lead_key = crm_id.removeprefix("crm-")
                if self.records.pop(lead_key, None) is None:
                    return jsonify(code="not_found", message="no such lead"), 404
                return Response(status=204)

        return app


def _drop() -> Response:
    """Close the client's connection now: it sees the connection end with no answer."""
    connection = request.environ.get("werkzeug.socket")
    if connection is not None:
        with contextlib.suppress(OSError):
            connection.shutdown(socket.SHUT_RDWR)
    return Response(status=500)
