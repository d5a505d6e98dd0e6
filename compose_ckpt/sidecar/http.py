"""/healthz and /metrics over the standard library's HTTP server, in a thread."""

from __future__ import annotations

import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from compose_ckpt.sidecar.metrics import Metrics

METRICS_TYPE = "text/plain; version=0.0.4; charset=utf-8"


class StatusServer:
    def __init__(self, metrics: Metrics, port: int, host: str = "0.0.0.0") -> None:
        self.port = port

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 - the stdlib's name
                if self.path == "/healthz":
                    ok, text = metrics.health()
                    self._send(200 if ok else 503, "text/plain; charset=utf-8", text + "\n")
                elif self.path == "/metrics":
                    self._send(200, METRICS_TYPE, metrics.render())
                else:
                    self._send(404, "text/plain; charset=utf-8", "not found: try /healthz or /metrics\n")

            def _send(self, status: int, content_type: str, body: str) -> None:
                data = body.encode()
                self.send_response(status)
                self.send_header("Content-Type", content_type)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, format: str, *args: object) -> None:  # noqa: A002 - the stdlib's signature
                pass  # scrapes every few seconds would drown the event log

        self._server = ThreadingHTTPServer((host, port), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, name="http", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
