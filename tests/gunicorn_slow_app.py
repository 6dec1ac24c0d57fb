"""A WSGI app for tests/test_gunicorn_start.py: the first gunicorn worker to load it is ready at once,
every later one takes SLOW_APP_SECONDS to load (as a worker importing the connector on a busy machine)."""

import os
import time


def create_app():  # noqa: ANN201
    try:
        os.close(os.open(os.environ["SLOW_APP_MARKER"], os.O_CREAT | os.O_EXCL))
    except FileExistsError:
        time.sleep(float(os.environ.get("SLOW_APP_SECONDS", "6")))

    def app(environ, start_response):  # noqa: ANN001, ANN202
        start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", "2")])
        return [b"ok"]

    return app
