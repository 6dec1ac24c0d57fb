"""A CRM for benchmarks: answers every POST 200 `{"id": ...}` at once, over keep-alive HTTP/1.1 (stdlib only).

    python bench/crm_sink.py [--port 0]   # prints "sink listening on http://127.0.0.1:PORT/crm"

Run in its own process, so a benchmark that measures its own CPU does not count the CRM's.
"""

from __future__ import annotations

import argparse
import itertools
import json
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

_ids = itertools.count(1)


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True  # headers and body are two writes: no 40 ms delayed-ACK wait

    def log_message(self, *args: object) -> None:
        pass

    def do_POST(self) -> None:  # noqa: N802 - http.server's naming
        self.rfile.read(int(self.headers.get("Content-Length") or 0))
        data = json.dumps({"id": str(next(_ids))}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    do_PUT = do_PATCH = do_POST


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, default=0)
    server = ThreadingHTTPServer(("127.0.0.1", parser.parse_args().port), Handler)
    server.daemon_threads = True
    print(f"sink listening on http://127.0.0.1:{server.server_port}/crm", flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main()
