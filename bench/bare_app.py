"""The yardstick for bench/receiver.py: a Flask endpoint that reads the body and answers 200.

With BENCH_WAIT_SECONDS set it also sleeps that long per request: what one wait for the disk costs
a gthread worker before any work is done (`bench/receiver.py --bare-wait`).
"""

import os
import time

from flask import Flask, request


def create_app() -> Flask:
    app = Flask(__name__)
    wait = float(os.environ.get("BENCH_WAIT_SECONDS", "0"))

    @app.post("/webhooks/<source>")
    def receive(source: str):  # noqa: ANN202
        request.get_data()
        if wait:
            time.sleep(wait)
        return {"status": "accepted"}

    return app
