"""The yardstick for bench/receiver.py: a Flask endpoint that reads the body and answers 200."""

from flask import Flask, request


def create_app() -> Flask:
    app = Flask(__name__)

    @app.post("/webhooks/<source>")
    def receive(source: str):  # noqa: ANN202
        request.get_data()
        return {"status": "accepted"}

    return app
