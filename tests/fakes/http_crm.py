"""A generic CRM that takes one lead per POST and upserts it by the X-Lead-Key header.

Tests script its answers: `fail_next(503, times=2)`, `answer_with(400, {...})`, a per-request delay.
It counts every request, so a test can tell "sent twice" from "stored twice".
"""

from __future__ import annotations

import json
import threading
import time
from typing import Any

from flask import Flask, jsonify, request


class FakeCrm:
    def __init__(self) -> None:
        self.records: dict[str, dict[str, Any]] = {}
        self.requests: list[dict[str, Any]] = []
        self.script: list[tuple[int, dict[str, Any], dict[str, str]]] = []
        self.delay = 0.0
        self.started = 0  # requests that arrived, counted before the delay
        self.lock = threading.Lock()
        self.app = self._build()

    def fail_next(self, status: int, times: int = 1, body: dict[str, Any] | None = None,
                  headers: dict[str, str] | None = None) -> None:
        self.script += [(status, body or {"code": "error", "message": f"scripted {status}"}, headers or {})] * times

    def _build(self) -> Flask:
        app = Flask("fake_crm")

        @app.route("/leads", methods=["POST", "PUT", "PATCH"])
        def upsert():  # noqa: ANN202
            self.started += 1
            if self.delay:
                time.sleep(self.delay)
            with self.lock:
                self.requests.append({"headers": dict(request.headers), "body": request.get_data()})
                if self.script:
                    status, body, headers = self.script.pop(0)
                    return jsonify(body), status, headers
                key = request.headers["X-Lead-Key"]
                record = json.loads(request.get_data())
                created = key not in self.records
                self.records.setdefault(key, {}).update(record)
                return jsonify(id=f"crm-{key}", created=created), 201 if created else 200

        return app
