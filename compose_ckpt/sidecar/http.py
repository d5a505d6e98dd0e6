"""/healthz, /metrics, /status (JSON) and / (an HTML page) over the standard library's HTTP server, in a thread."""

from __future__ import annotations

import json
import threading
from collections.abc import Callable
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from compose_ckpt.sidecar.metrics import Metrics
from compose_ckpt.sidecar.status import render_page

METRICS_TYPE = "text/plain; version=0.0.4; charset=utf-8"


class StatusServer:
    """`status` builds the document of /status (the page at / shows the same)."""

    def __init__(self, metrics: Metrics, port: int, status: Callable[[], dict[str, Any]], bind_address: str = "0.0.0.0") -> None:
        self.port = port

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 - the stdlib's name
                path = self.path.split("?", 1)[0]
                if path == "/healthz":
                    ok, text = metrics.health()
                    self._send(200 if ok else 503, "text/plain; charset=utf-8", text + "\n")
                elif path == "/metrics":
                    self._send(200, METRICS_TYPE, metrics.render())
                elif path == "/status":
                    self._send(200, "application/json", json.dumps(status(), indent=2) + "\n")
                elif path == "/":
                    self._send(200, "text/html; charset=utf-8", render_page(status(), datetime.now(UTC)),
                               # the page is read-only and self-contained: allow no script and no other origin
                               {"Content-Security-Policy": "default-src 'none'; style-src 'unsafe-inline'",
                                "X-Content-Type-Options": "nosniff", "Cache-Control": "no-store"})
                else:
                    self._send(404, "text/plain; charset=utf-8", "not found: try /, /status, /healthz or /metrics\n")

            def _send(self, status: int, content_type: str, body: str, headers: dict[str, str] | None = None) -> None:
                data = body.encode()
                self.send_response(status)
                self.send_header("Content-Type", content_type)
                self.send_header("Content-Length", str(len(data)))
                for name, value in (headers or {}).items():
                    self.send_header(name, value)
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, format: str, *args: object) -> None:  # noqa: A002 - the stdlib's signature
                pass  # scrapes every few seconds would drown the event log

        self._server = ThreadingHTTPServer((bind_address, port), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, name="http", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
