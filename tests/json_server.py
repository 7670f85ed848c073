"""A real HTTP server on a free port that answers every request with JSON, for the tests that talk to an
OpenAI-compatible endpoint: `answer(method, path, body)` gives (status, body); `body` is the request's JSON, None
for a GET. An answer's body is JSON, or bytes sent as they are; its status "truncated" sends half of it under a
Content-Length of more, then closes the connection. `received` keeps each request's (headers, body), in order
(headers as http.server reads them: `get` ignores case, as HTTP does)."""

from __future__ import annotations

import email.message
import http.server
import json
import socket
import threading
from collections.abc import Callable


class JsonServer:
    def __init__(self, answer: Callable[[str, str, dict | None], tuple[int, dict]]) -> None:
        self.received: list[tuple[email.message.Message, dict | None]] = []
        received = self.received

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self):
                received.append((self.headers, None))
                self._send(*answer("GET", self.path, None))

            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                received.append((self.headers, body))
                self._send(*answer("POST", self.path, body))

            def _send(self, status: int | str, body: dict | bytes) -> None:
                data = body if isinstance(body, bytes) else json.dumps(body).encode()
                cut = status == "truncated"  # a server or proxy that dies while it sends the body
                self.send_response(200 if cut else status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data) + 100 if cut else len(data)))
                self.end_headers()
                self.wfile.write(data[: len(data) // 2] if cut else data)
                if cut:
                    self.wfile.flush()
                    self.connection.shutdown(socket.SHUT_RDWR)
                    self.close_connection = True

            def log_message(self, *args):
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()
        self.url = f"http://127.0.0.1:{self.httpd.server_port}/v1"

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
