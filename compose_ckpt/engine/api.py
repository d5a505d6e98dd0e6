"""The Docker Engine API as JSON over HTTP: the calls every command makes, with nothing but the stdlib.

Why not the docker SDK for these: importing it (requests, urllib3) and its
API-version negotiation (a `/version` call, which makes the daemon run
`runc --version`) cost more than the whole of a small snapshot's own work.
The SDK remains for what it does well (archives, image streams, events, ssh://
and TLS hosts); `SdkTransport` runs these same calls through it where the
stdlib one cannot reach the engine.
"""

from __future__ import annotations

import contextlib
import functools
import http.client
import io
import json
import os
import socket
import threading
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import quote, urlencode, urlsplit

# Engines older than this cannot checkpoint the way compose-ckpt does (CheckpointID/Exit in the body).
MIN_API_VERSION = "1.25"
STREAM_BLOCK = 1024**2


class ApiError(Exception):
    """The engine answered with an error status."""

    def __init__(self, status: int, explanation: str) -> None:
        super().__init__(explanation)
        self.status = status
        self.explanation = explanation


class Unreachable(Exception):
    """No answer from the engine: refused, reset, or (`timed_out`) none within the call's timeout."""

    def __init__(self, message: str, timed_out: bool = False) -> None:
        super().__init__(message)
        self.timed_out = timed_out


@dataclass(frozen=True)
class FileBody:
    """`size` bytes of a regular file, sent as one part of a request body (by the kernel where it can)."""

    path: Path
    size: int


class GrowingBody(Protocol):
    """A part whose bytes are not all there when the body starts (a page image CRIU is still writing): it
    sends exactly `size` bytes itself, waiting for them, or raises."""

    size: int

    def send(self, sock: socket.socket, on_step: Callable[[int], None]) -> None:
        """Send the part on `sock`, calling `on_step` with its bytes sent so far."""
        ...

    def chunks(self) -> Iterator[bytes]:
        """The part as blocks, for a body that goes through the SDK (TLS, ssh://)."""
        ...


BodyPart = bytes | FileBody | GrowingBody
# Called with (bytes sent so far, bytes to send) while a body goes out.
SentCallback = Callable[[int, int], None]
_SEND_SLICE = 64 * 1024**2  # a progress report per slice of a file


class Transport(Protocol):
    """One request to the engine: the decoded JSON answer (None when empty), or ApiError/Unreachable.
    A `body` is sent as JSON without its top-level None values, as the docker SDK does."""

    def call(self, method: str, path: str, params: dict[str, Any] | None = None, body: Any = None,
             timeout: float | None = None) -> Any: ...

    def stream(self, method: str, path: str, params: dict[str, Any] | None = None,
               chunks: Iterable[bytes] | None = None) -> Iterator[bytes]:
        """A request whose body (a tar, for instance) and answer are streamed, on a connection of its own."""
        ...

    def upload(self, path: str, params: dict[str, Any] | None, parts: Sequence[BodyPart],
               on_sent: SentCallback) -> None:
        """A PUT whose body is `parts` (files of gigabytes among them), on a connection of its own."""
        ...

    def close(self) -> None: ...


def path_of(template: str, *parts: str) -> str:
    """`/containers/{0}/json` with each part quoted, so that a name cannot reach another endpoint."""
    return template.format(*(quote(part, safe="") for part in parts))


def query(params: dict[str, Any] | None) -> str:
    """Docker's conventions: booleans as 1/0, filters as JSON, None left out."""
    if not params:
        return ""
    encoded = {}
    for key, value in params.items():
        if value is None:
            continue
        if isinstance(value, bool):
            value = int(value)
        elif isinstance(value, (dict, list)):
            value = json.dumps(value)
        encoded[key] = value
    return "?" + urlencode(encoded) if encoded else ""


class _UnixConnection(http.client.HTTPConnection):
    def __init__(self, socket_path: str, timeout: float) -> None:
        super().__init__("localhost", timeout=timeout)
        self.socket_path = socket_path

    def connect(self) -> None:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(self.timeout)
        try:
            sock.connect(self.socket_path)
        except OSError:
            sock.close()
            raise
        self.sock = sock


class UnixTransport:
    """HTTP/1.1 with keep-alive over the engine's unix socket; one connection per thread."""

    def __init__(self, socket_path: str, timeout: float) -> None:
        self.socket_path = socket_path
        self.timeout = timeout
        self.version = ""  # set by negotiate()
        self._local = threading.local()
        self._all: list[_UnixConnection] = []
        self._lock = threading.Lock()

    def negotiate(self) -> str:
        """The engine's API version, from the cheap /_ping (as the docker CLI does); every call then uses it."""
        response = self._send("GET", "/_ping", None, None)
        self.version = response.getheader("Api-Version") or MIN_API_VERSION
        return self.version

    def call(self, method: str, path: str, params: dict[str, Any] | None = None, body: Any = None,
             timeout: float | None = None) -> Any:
        response = self._send(method, f"/v{self.version}{path}{query(params)}", body, timeout)
        data = response.read()
        if response.status >= 400:
            raise ApiError(response.status, _explanation(data, response.reason))
        return json.loads(data) if data and response.getheader("Content-Type", "").startswith("application/json") else None

    def _send(self, method: str, url: str, body: Any, timeout: float | None) -> http.client.HTTPResponse:
        payload = None if body is None else json.dumps(_without_none(body)).encode()
        headers = {"Content-Type": "application/json"} if payload is not None else {}
        for attempt in (1, 2):  # a kept-alive connection the daemon has closed meanwhile: once more, fresh
            connection = self._connection()
            try:
                connection.timeout = timeout or self.timeout
                if connection.sock is not None:
                    connection.sock.settimeout(connection.timeout)
                connection.request(method, url, body=payload, headers=headers)
                response = connection.getresponse()
                if method == "GET" and url.endswith("/_ping"):
                    response.read()
                return response
            except (OSError, http.client.HTTPException) as exc:
                connection.close()
                stale = isinstance(exc, (http.client.RemoteDisconnected, BrokenPipeError, ConnectionResetError))
                if attempt == 2 or not stale:
                    raise Unreachable(f"{self.socket_path}: {exc}", timed_out=isinstance(exc, TimeoutError)) from exc
        raise AssertionError("unreachable")

    def stream(self, method: str, path: str, params: dict[str, Any] | None = None,
               chunks: Iterable[bytes] | None = None) -> Iterator[bytes]:
        connection = _UnixConnection(self.socket_path, self.timeout)
        try:
            try:
                headers = {"Content-Type": "application/x-tar"} if chunks is not None else {}
                connection.request(method, f"/v{self.version}{path}{query(params)}", body=chunks, headers=headers,
                                   encode_chunked=chunks is not None)
                response = connection.getresponse()
                if response.status >= 400:
                    raise ApiError(response.status, _explanation(response.read(), response.reason))
                while block := response.read(STREAM_BLOCK):
                    yield block
            except (OSError, http.client.HTTPException) as exc:
                raise Unreachable(f"{self.socket_path}: {exc}", timed_out=isinstance(exc, TimeoutError)) from exc
        finally:
            connection.close()

    def upload(self, path: str, params: dict[str, Any] | None, parts: Sequence[BodyPart],
               on_sent: SentCallback) -> None:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(self.timeout)
        try:
            sock.connect(self.socket_path)
            _sized_put(sock, f"/v{self.version}{path}{query(params)}", parts, on_sent)
        except (OSError, http.client.HTTPException) as exc:
            raise Unreachable(f"{self.socket_path}: {exc}", timed_out=isinstance(exc, TimeoutError)) from exc
        finally:
            sock.close()

    def _connection(self) -> _UnixConnection:
        connection: _UnixConnection | None = getattr(self._local, "connection", None)
        if connection is None:
            connection = _UnixConnection(self.socket_path, self.timeout)
            self._local.connection = connection
            with self._lock:
                self._all.append(connection)
        return connection

    def close(self) -> None:
        with self._lock:
            for connection in self._all:
                connection.close()
            self._all.clear()


class SdkTransport:
    """The same calls through docker SDK's client: for tcp://, TLS, ssh:// and context hosts."""

    def __init__(self, api: Any) -> None:
        self._api = api  # docker.APIClient (a requests.Session)

    def call(self, method: str, path: str, params: dict[str, Any] | None = None, body: Any = None,
             timeout: float | None = None) -> Any:
        import requests.exceptions

        url = f"{self._api.base_url}/v{self._api.api_version}{path}{query(params)}"
        try:
            response = self._api.request(method, url, json=None if body is None else _without_none(body),
                                         timeout=timeout or self._api.timeout)
        except requests.exceptions.RequestException as exc:
            raise Unreachable(str(exc), timed_out=isinstance(exc, requests.exceptions.Timeout)) from exc
        if response.status_code >= 400:
            raise ApiError(response.status_code, _explanation(response.content, response.reason))
        is_json = response.headers.get("Content-Type", "").startswith("application/json")
        return response.json() if response.content and is_json else None

    def stream(self, method: str, path: str, params: dict[str, Any] | None = None,
               chunks: Iterable[bytes] | None = None) -> Iterator[bytes]:
        import requests.exceptions

        url = f"{self._api.base_url}/v{self._api.api_version}{path}{query(params)}"
        try:
            with self._api.request(method, url, data=chunks, stream=True, timeout=self._api.timeout) as response:
                if response.status_code >= 400:
                    raise ApiError(response.status_code, _explanation(response.content, response.reason))
                yield from response.iter_content(STREAM_BLOCK)
        except requests.exceptions.RequestException as exc:
            raise Unreachable(str(exc), timed_out=isinstance(exc, requests.exceptions.Timeout)) from exc

    def upload(self, path: str, params: dict[str, Any] | None, parts: Sequence[BodyPart],
               on_sent: SentCallback) -> None:
        address = urlsplit(str(self._api.base_url))
        if address.scheme == "http" and address.hostname:  # plain tcp://: the kernel sends the files
            url = f"/v{self._api.api_version}{path}{query(params)}"
            try:
                with socket.create_connection((address.hostname, address.port or 80), self._api.timeout) as sock:
                    _sized_put(sock, url, parts, on_sent)
            except (OSError, http.client.HTTPException) as exc:
                raise Unreachable(f"{address.netloc}: {exc}", timed_out=isinstance(exc, TimeoutError)) from exc
            return
        for _ in self.stream("PUT", path, params, body_chunks(parts, on_sent)):  # TLS, ssh://: through the SDK
            pass

    def close(self) -> None:
        self._api.close()


def body_length(parts: Sequence[BodyPart]) -> int:
    return sum(len(part) if isinstance(part, bytes) else part.size for part in parts)


def _sized_put(sock: socket.socket, url: str, parts: Sequence[BodyPart], on_sent: SentCallback) -> None:
    """PUT `url` with a Content-Length body of `parts` on a connected socket: file parts go by sendfile, with
    no copy through this process (a few times faster than a chunked body for gigabytes of page images)."""
    total = body_length(parts)
    try:
        sock.sendall(f"PUT {url} HTTP/1.1\r\nHost: docker\r\nContent-Type: application/x-tar\r\n"
                     f"Content-Length: {total}\r\nConnection: close\r\n\r\n".encode())
        _send_parts(sock, parts, total, on_sent)
    except OSError:
        # The daemon may have answered and closed before taking the whole body (a missing container):
        # its answer says more than the broken pipe.
        with contextlib.suppress(OSError, http.client.HTTPException):
            _raise_for_answer(sock)
        raise
    _raise_for_answer(sock)


def _send_parts(sock: socket.socket, parts: Sequence[BodyPart], total: int, on_sent: SentCallback) -> None:
    sent = 0
    on_sent(0, total)
    for part in parts:
        if isinstance(part, bytes):
            sock.sendall(part)
            sent += len(part)
            on_sent(sent, total)
            continue
        if not isinstance(part, FileBody):
            part.send(sock, functools.partial(_sent_after, sent, total, on_sent))
            sent += part.size
            continue
        with _opened(part) as source:
            offset = 0
            while offset < part.size:
                step = sock.sendfile(source, offset, min(_SEND_SLICE, part.size - offset))
                if step == 0:
                    raise OSError(f"{part.path} ended at {offset} of {part.size} bytes")
                offset += step
                on_sent(sent + offset, total)
        sent += part.size


def _sent_after(before: int, total: int, on_sent: SentCallback, done: int) -> None:
    on_sent(before + done, total)


def _raise_for_answer(sock: socket.socket) -> None:
    response = http.client.HTTPResponse(sock, method="PUT")
    response.begin()
    data = response.read()
    if response.status >= 400:
        raise ApiError(response.status, _explanation(data, response.reason))


def body_chunks(parts: Sequence[BodyPart], on_sent: SentCallback) -> Iterator[bytes]:
    """`parts` as chunks of a streamed body, files read in big blocks."""
    total = body_length(parts)
    sent = 0
    on_sent(0, total)
    for part in parts:
        if isinstance(part, bytes):
            sent += len(part)
            yield part
            on_sent(sent, total)
            continue
        if not isinstance(part, FileBody):
            for block in part.chunks():
                sent += len(block)
                yield block
                on_sent(sent, total)
            continue
        with _opened(part) as source:
            left = part.size
            while left > 0:
                block = source.read(min(8 * STREAM_BLOCK, left))
                if not block:
                    raise OSError(f"{part.path} ended {left} bytes short of {part.size}")
                left -= len(block)
                sent += len(block)
                on_sent(sent, total)
                yield block


def _opened(part: FileBody) -> io.FileIO:
    """The file of `part`, never through a link, checked to hold at least the bytes it declares."""
    source = os.fdopen(os.open(part.path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC), "rb", buffering=0)
    if os.fstat(source.fileno()).st_size < part.size:
        source.close()
        raise OSError(f"{part.path} is shorter than the {part.size} bytes declared")
    return source


def _without_none(body: Any) -> Any:
    return {key: value for key, value in body.items() if value is not None} if isinstance(body, dict) else body


def _explanation(data: bytes, reason: str) -> str:
    """The daemon's `{"message": ...}`, else the raw text, else the HTTP reason."""
    text = data.decode(errors="replace").strip()
    try:
        message = json.loads(text).get("message") if text else None
    except (ValueError, AttributeError):
        message = None
    return str(message or text or reason)
