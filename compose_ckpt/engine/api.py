"""The Docker Engine API as JSON over HTTP: the calls every command makes, with nothing but the stdlib.

Why not the docker SDK for these: importing it (requests, urllib3) and its
API-version negotiation (a `/version` call, which makes the daemon run
`runc --version`) cost more than the whole of a small snapshot's own work.
The SDK remains for what it does well (archives, image streams, events, ssh://
and TLS hosts); `SdkTransport` runs these same calls through it where the
stdlib one cannot reach the engine.
"""

from __future__ import annotations

import http.client
import json
import socket
import threading
from collections.abc import Iterable, Iterator
from typing import Any, Protocol
from urllib.parse import quote, urlencode

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


class Transport(Protocol):
    """One request to the engine: the decoded JSON answer (None when empty), or ApiError/Unreachable.
    A `body` is sent as JSON without its top-level None values, as the docker SDK does."""

    def call(self, method: str, path: str, params: dict[str, Any] | None = None, body: Any = None,
             timeout: float | None = None) -> Any: ...

    def stream(self, method: str, path: str, params: dict[str, Any] | None = None,
               chunks: Iterable[bytes] | None = None) -> Iterator[bytes]:
        """A request whose body (a tar, for instance) and answer are streamed, on a connection of its own."""
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

    def close(self) -> None:
        self._api.close()


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
