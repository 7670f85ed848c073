"""A real HTTP server on a free port that answers every request with JSON, for the tests that talk to an
OpenAI-compatible endpoint: `answer(method, path, body)` gives (status, body); `body` is the request's JSON, None
for a GET."""

from __future__ import annotations

import http.server
import json
import threading
from collections.abc import Callable


class JsonServer:
    def __init__(self, answer: Callable[[str, str, dict | None], tuple[int, dict]]) -> None:
        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self):
                self._send(*answer("GET", self.path, None))

            def do_POST(self):
                self._send(*answer("POST", self.path, json.loads(self.rfile.read(int(self.headers["Content-Length"])))))

            def _send(self, status: int, body: dict) -> None:
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args):
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()
        self.url = f"http://127.0.0.1:{self.httpd.server_port}/v1"

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
