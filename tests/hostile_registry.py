"""A registry that lies: the OCI distribution API on 127.0.0.1 (http.server), blobs and manifests in memory.

`push` fills it as a registry would; a test then rewrites what it serves (`manifest`, `put`), or makes
it misbehave: `error_body` bytes of garbage with every error answer, blobs sent at `trickle_delay`
seconds per byte (manifests too with `trickle_manifests`, error answers with `trickle_errors`), manifests
answered only after `stall_manifests` seconds, a tag list whose pages never end (`endless_tags`), or
the status line and headers of the answers to paths matching `trickle_head` sent one byte per 0.2 s,
header after header (`head_bytes` counts them; after 30 s it hangs up, so that a client waiting for all of
it fails a test rather than hanging it). With `require_token` every repository request asks for a bearer token
from its own realm, /token. It counts the bytes it sent (`sent`) and the blob downloads (`blob_gets`)."""

from __future__ import annotations

import hashlib
import json
import re
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"


class HostileRegistry:
    def __init__(self) -> None:
        self.blobs: dict[str, bytes] = {}
        self.manifests: dict[str, bytes] = {}  # tag or digest -> body
        self.uploads: dict[str, bytearray] = {}
        self.error_body = 0  # bytes of garbage after every error answer
        self.trickle_delay = 0.0  # seconds between the bytes of a blob
        self.fail_blobs = False  # answer every blob GET with 500 (and error_body)
        self.trickle_manifests = False  # manifests at trickle_delay seconds per byte too
        self.trickle_errors = False  # error answers too
        self.endless_tags = False  # every page of the tag list links to a next one
        self.stall_manifests = 0.0  # seconds to wait before answering a manifest request
        self.trickle_head = ""  # a regular expression: the paths whose answers' heads are trickled
        self.head_bytes = 0
        self.require_token = False
        self.stopping = threading.Event()  # ends what is sent for ever, when the test is done
        self.sent = 0
        self.blob_gets: list[str] = []
        self.address = ""
        self.lock = threading.Lock()

    def manifest(self, tag: str) -> dict[str, Any]:
        document: dict[str, Any] = json.loads(self.manifests[tag])
        return document

    def put(self, tag: str, document: dict[str, Any]) -> str:
        """Serve `document` as the manifest of `tag`; returns its digest."""
        body = json.dumps(document).encode()
        digest = "sha256:" + hashlib.sha256(body).hexdigest()
        self.manifests[tag] = self.manifests[digest] = body
        return digest

    def add_blob(self, data: bytes) -> str:
        digest = "sha256:" + hashlib.sha256(data).hexdigest()
        self.blobs[digest] = data
        return digest


class _Handler(BaseHTTPRequestHandler):
    registry: HostileRegistry
    protocol_version = "HTTP/1.1"

    def log_message(self, *args: object) -> None:
        pass

    def _send(self, status: int, body: bytes = b"", headers: dict[str, str] | None = None,
              length: int | None = None) -> None:
        self.send_response(status)
        for key, value in (headers or {}).items():
            self.send_header(key, value)
        self.send_header("Content-Length", str(len(body) if length is None else length))
        self.end_headers()
        if self.command != "HEAD":
            self._write(body)

    def _write(self, data: bytes) -> None:
        self.wfile.write(data)
        with self.registry.lock:
            self.registry.sent += len(data)

    def _error(self, status: int) -> None:
        garbage = self.registry.error_body
        if not garbage:
            self._send(status, json.dumps({"errors": [{"code": "UNKNOWN", "message": "no"}]}).encode())
            return
        self._send(status, length=garbage)
        if self.registry.trickle_errors:
            self._trickle(b"x" * garbage)
            return
        try:
            for _ in range(0, garbage, 65536):
                self._write(b"x" * 65536)
        except OSError:
            pass  # the client stopped reading, as it should

    def _trickle(self, data: bytes) -> None:
        try:
            for byte in data:
                self._write(bytes([byte]))
                self.wfile.flush()
                time.sleep(self.registry.trickle_delay)  # on purpose: a registry that trickles
        except OSError:
            pass  # the client gave up, as it should

    def _trickle_head(self) -> bool:
        """Whether this answer's head is the one trickled for ever: then nothing else is sent."""
        if not self.registry.trickle_head or not re.fullmatch(self.registry.trickle_head, self.path):
            return False
        head = b"HTTP/1.1 200 OK\r\n"
        try:
            for _ in range(150):
                if self.registry.stopping.wait(0.2):
                    break  # on purpose: a registry that trickles
                self.wfile.write(head[:1])
                self.wfile.flush()
                with self.registry.lock:
                    self.registry.head_bytes += 1
                head = head[1:] or b"X-Slow: yes\r\n"
        except OSError:
            pass  # the client gave up, as it should
        self.close_connection = True
        return True

    def _unauthorized(self) -> bool:
        """Whether this request lacked the token `require_token` asks for (it is then answered 401)."""
        if not self.registry.require_token or not self.path.startswith("/v2/") or self.path == "/v2/" \
                or self.headers.get("Authorization") == "Bearer hostile-token":
            return False
        challenge = f'Bearer realm="http://{self.registry.address}/token",service="hostile"'
        self._send(401, b"{}", {"WWW-Authenticate": challenge})
        return True

    def _route(self) -> tuple[str, str] | None:
        match = re.fullmatch(r"/v2/(.+)/(blobs|manifests|blobs/uploads)/([^?]*)(\?.*)?", self.path)
        return (match[2], match[3]) if match else None

    def do_GET(self) -> None:
        if self._trickle_head() or self._unauthorized():
            return
        if self.path.startswith("/token"):
            self._send(200, json.dumps({"token": "hostile-token"}).encode())
            return
        if self.path == "/v2/":
            self._send(200, b"{}")
            return
        if "/tags/list" in self.path and self.registry.endless_tags:
            page = int(re.search(r"last=([0-9]+)", self.path)[1]) + 1 if "last=" in self.path else 0  # type: ignore[index]
            repository = self.path.split("/tags/list")[0]
            self._send(200, json.dumps({"tags": [f"t{page}-{n}" for n in range(1000)]}).encode(),
                       {"Link": f'<{repository}/tags/list?n=1000&last={page}>; rel="next"'})
            return
        route = self._route()
        if route is None:
            self._error(404)
            return
        kind, key = route
        if kind == "manifests":
            time.sleep(self.registry.stall_manifests)  # on purpose: a registry that takes its time to answer
            body = self.registry.manifests.get(key)
            if body is None:
                self._error(404)
            elif self.registry.trickle_manifests:
                self._send(200, headers={"Content-Type": OCI_MANIFEST}, length=len(body))
                self._trickle(body)
            else:
                self._send(200, body, {"Content-Type": OCI_MANIFEST})
            return
        self.registry.blob_gets.append(key)
        data = self.registry.blobs.get(key)
        if data is None or self.registry.fail_blobs:
            self._error(500 if self.registry.fail_blobs else 404)
            return
        if not self.registry.trickle_delay:
            self._send(200, data)
            return
        self._send(200, length=len(data))
        self._trickle(data)

    def do_HEAD(self) -> None:
        if self._trickle_head():
            return
        route = self._route()
        present = route is not None and (route[1] in self.registry.blobs or route[1] in self.registry.manifests)
        self._send(200 if present else 404, length=0)

    def do_POST(self) -> None:
        if self._trickle_head():
            return
        upload = uuid.uuid4().hex
        self.registry.uploads[upload] = bytearray()
        repository = self.path.split("/blobs/uploads/")[0]
        self._send(202, headers={"Location": f"{repository}/blobs/uploads/{upload}"})

    def do_PUT(self) -> None:
        data = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        if self._trickle_head():
            return
        route = self._route()
        if route is None:
            self._error(404)
            return
        kind, key = route
        if kind == "manifests":
            digest = "sha256:" + hashlib.sha256(data).hexdigest()
            self.registry.manifests[key] = self.registry.manifests[digest] = data
            self._send(201, headers={"Docker-Content-Digest": digest})
            return
        self.registry.add_blob(bytes(data))
        self._send(201)


@contextmanager
def serving() -> Iterator[HostileRegistry]:
    registry = HostileRegistry()
    handler = type("Handler", (_Handler,), {"registry": registry})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    registry.address = f"127.0.0.1:{server.server_address[1]}"
    try:
        yield registry
    finally:
        registry.stopping.set()
        server.shutdown()
        server.server_close()
