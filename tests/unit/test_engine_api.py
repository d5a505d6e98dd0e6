"""The stdlib Engine API transport, against a small HTTP server on a unix socket that answers as dockerd does.

That the real engine accepts these calls is proven by every integration test (they all go through it)."""

from __future__ import annotations

import io
import json
import socketserver
import tarfile
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import Any

import pytest

from compose_ckpt.engine.api import (
    ApiError,
    BodyPart,
    FileBody,
    SdkTransport,
    UnixTransport,
    Unreachable,
    path_of,
    query,
)


class FakeDockerd(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, as dockerd
    seen: list[tuple[str, str, Any]] = []

    def _answer(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        body = json.loads(self.rfile.read(length)) if length else None
        self.seen.append((self.command, self.path, body))
        if self.path == "/_ping":
            self._send(200, b"OK", "text/plain", {"Api-Version": "1.45"})
        elif self.path.startswith("/v1.45/containers/missing/json"):
            self._send(404, b'{"message":"No such container: missing"}\n', "application/json")
        elif self.path.startswith("/v1.45/slow"):
            threading.Event().wait(1)
            self._send(204, b"", "text/plain")
        elif self.path.startswith("/v1.45/containers/c1/json"):
            self._send(200, b'{"Id":"c1","State":{"Status":"running"}}', "application/json")
        else:
            self._send(204, b"", "text/plain")

    def _send(self, status: int, data: bytes, content_type: str, headers: dict[str, str] | None = None) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(data)))
        for key, value in (headers or {}).items():
            self.send_header(key, value)
        self.end_headers()
        self.wfile.write(data)

    do_GET = do_POST = do_DELETE = _answer

    def do_PUT(self) -> None:
        body = self.rfile.read(int(self.headers["Content-Length"]))
        self.seen.append((self.command, self.path, body))
        if "/full/" in self.path:
            self._send(500, b'{"message":"no space left on device"}\n', "application/json")
        else:
            self._send(200, b"", "text/plain")

    def log_message(self, *args: Any) -> None:
        pass


class _Server(socketserver.ThreadingMixIn, socketserver.UnixStreamServer):
    daemon_threads = True

    def handle_error(self, request: Any, client_address: Any) -> None:
        pass  # the slow answer meets a client that gave up: expected


@pytest.fixture
def dockerd(tmp_path: Path) -> Iterator[str]:
    path = str(tmp_path / "docker.sock")
    FakeDockerd.seen = []
    server = _Server(path, FakeDockerd)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield path
    server.shutdown()
    server.server_close()


def test_the_version_comes_from_ping_and_prefixes_every_call(dockerd: str) -> None:
    transport = UnixTransport(dockerd, timeout=5)
    assert transport.negotiate() == "1.45"
    assert transport.call("GET", "/containers/c1/json") == {"Id": "c1", "State": {"Status": "running"}}
    assert transport.call("POST", "/containers/c1/checkpoints", body={"CheckpointID": "x", "Exit": False,
                                                                      "Dropped": None}) is None
    assert FakeDockerd.seen[-1] == ("POST", "/v1.45/containers/c1/checkpoints", {"CheckpointID": "x", "Exit": False})
    transport.close()


def test_an_error_status_carries_the_daemons_message(dockerd: str) -> None:
    transport = UnixTransport(dockerd, timeout=5)
    transport.negotiate()
    with pytest.raises(ApiError) as caught:
        transport.call("GET", "/containers/missing/json")
    assert caught.value.status == 404 and caught.value.explanation == "No such container: missing"


def test_a_call_past_its_timeout_is_unreachable_and_says_it_timed_out(dockerd: str) -> None:
    transport = UnixTransport(dockerd, timeout=5)
    transport.negotiate()
    with pytest.raises(Unreachable) as caught:
        transport.call("POST", "/slow", timeout=0.2)
    assert caught.value.timed_out
    assert transport.call("GET", "/containers/c1/json")["Id"] == "c1"  # a fresh connection afterwards


def test_no_daemon_is_unreachable_not_timed_out(tmp_path: Path) -> None:
    with pytest.raises(Unreachable) as caught:
        UnixTransport(str(tmp_path / "none.sock"), timeout=5).negotiate()
    assert not caught.value.timed_out


def test_names_cannot_reach_another_endpoint_and_queries_follow_dockers_conventions() -> None:
    assert path_of("/containers/{0}/json", "../images/x?y") == "/containers/..%2Fimages%2Fx%3Fy/json"
    assert query({"all": True, "force": False, "skip": None, "filters": {"label": ["a=b"]}}) == (
        "?all=1&force=0&filters=%7B%22label%22%3A+%5B%22a%3Db%22%5D%7D")
    assert query({}) == "" and query({"skip": None}) == ""


def test_an_upload_sends_its_file_parts_whole_with_their_length_and_reports_its_bytes(dockerd: str,
                                                                                         tmp_path: Path) -> None:
    image = tmp_path / "pages-1.img"
    image.write_bytes(bytes(range(256)) * 1000)
    member = tarfile.TarInfo("f/pages-1.img")
    member.size = 256_000
    parts: list[BodyPart] = [member.tobuf(), FileBody(image, 256_000), bytes(-256_000 % 512), bytes(1024)]
    progress: list[tuple[int, int]] = []
    transport = UnixTransport(dockerd, timeout=5)
    transport.negotiate()

    transport.upload("/containers/c1/archive", {"path": "/"}, parts, lambda done, total: progress.append((done, total)))

    method, path, body = FakeDockerd.seen[-1]
    assert (method, path) == ("PUT", "/v1.45/containers/c1/archive?path=%2F")
    with tarfile.open(fileobj=io.BytesIO(body)) as archive:
        assert archive.extractfile("f/pages-1.img").read() == image.read_bytes()  # type: ignore[union-attr]
    assert progress[0] == (0, len(body)) and progress[-1] == (len(body), len(body))


def test_a_refused_upload_carries_the_daemons_message(dockerd: str, tmp_path: Path) -> None:
    transport = UnixTransport(dockerd, timeout=5)
    transport.negotiate()
    with pytest.raises(ApiError) as caught:
        transport.upload("/containers/full/archive", None, [bytes(1024)], lambda done, total: None)
    assert caught.value.status == 500 and caught.value.explanation == "no space left on device"


class _TlsApi:
    """The docker SDK's APIClient as SdkTransport uses it, for an https:// engine: what it was asked to send."""

    base_url, api_version, timeout = "https://engine.example:2376", "1.45", 5
    sent: bytes = b""

    def request(self, method: str, url: str, data: Iterator[bytes], **_: Any) -> Any:
        self.sent = b"".join(data)
        response = type("Response", (), {"status_code": 200, "__enter__": lambda s: s, "__exit__": lambda s, *a: None,
                                         "iter_content": lambda s, size: iter([b""])})
        return response()


def test_an_upload_to_a_tls_engine_streams_the_same_parts_through_the_sdk(tmp_path: Path) -> None:
    image = tmp_path / "pages-1.img"
    image.write_bytes(b"p" * 70_000)
    api = _TlsApi()

    SdkTransport(api).upload("/containers/c1/archive", {"path": "/"}, [b"head", FileBody(image, 70_000)],
                             lambda done, total: None)

    assert api.sent == b"head" + b"p" * 70_000
