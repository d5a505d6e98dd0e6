"""An overall deadline for one HTTP request: connecting, sending it, and receiving the answer's status line
and headers (the body, read afterwards, keeps the deadline of its own size: client.transfer_deadline).

urllib3's timeouts bound each socket operation, not the request: a server sending one header byte a second
holds a request for days (http.client accepts 100 header lines of 64 KiB each). So every socket a
`WatchedAdapter` connection uses while `answered_within(seconds, ...)` runs in the same thread is watched
through a duplicate of its descriptor (ours to close, so never someone else's by the time it is used), and
a timer shuts those sockets down when the seconds pass: the blocked read fails at once, and the request
raises AnsweredTooSlowly. The timer is cancelled and joined before the call returns: no thread outlives it.
"""

from __future__ import annotations

import os
import socket
import threading
from collections.abc import Callable
from typing import Any

import requests
from requests.adapters import HTTPAdapter
from urllib3 import HTTPConnectionPool, HTTPSConnectionPool, poolmanager
from urllib3.connection import HTTPConnection, HTTPSConnection

TIMER_NAME = "registry-deadline"


class AnsweredTooSlowly(requests.exceptions.Timeout):
    """The request was not answered (status line and headers) within its deadline."""


class _Watch:
    """The sockets one thread's request uses, shut down when `seconds` have passed."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self.expired = False
        self._sockets: list[socket.socket] = []
        self._lock = threading.Lock()
        self._timer = threading.Timer(seconds, self._expire)
        self._timer.name, self._timer.daemon = TIMER_NAME, True

    def add(self, sock: socket.socket) -> None:
        if sock.fileno() < 0:
            return
        # a duplicate: an SSL socket cannot be dup()ed, but shutdown() acts on the socket every descriptor shares
        duplicate = socket.socket(fileno=os.dup(sock.fileno()))
        with self._lock:
            self._sockets.append(duplicate)
            if self.expired:  # connected after the deadline (a slow DNS answer or connect)
                _shut(duplicate)

    def _expire(self) -> None:
        with self._lock:
            self.expired = True
            for sock in self._sockets:
                _shut(sock)

    def __enter__(self) -> _Watch:
        self._timer.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._timer.cancel()
        self._timer.join()
        with self._lock:
            for sock in self._sockets:
                sock.close()
            self._sockets.clear()


def _shut(sock: socket.socket) -> None:
    try:
        sock.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass  # already closed by the peer: nothing left to cut


_current = threading.local()  # the _Watch of the request this thread is making, if any


def _watch(sock: socket.socket | None) -> None:
    watch: _Watch | None = getattr(_current, "watch", None)
    if watch is not None and sock is not None:
        watch.add(sock)


def answered_within(seconds: float, send: Callable[[], requests.Response]) -> requests.Response:
    """`send()` (a request of a session with WatchedAdapter mounted, in this thread), given `seconds` to be
    answered; raises AnsweredTooSlowly when it was not, with the connection closed."""
    outer = getattr(_current, "watch", None)
    too_slow = AnsweredTooSlowly(f"no answer within {seconds:.0f} s")
    with _Watch(seconds) as watch:
        _current.watch = watch
        try:
            response = send()
        except requests.exceptions.RequestException:
            if watch.expired:
                raise too_slow from None
            raise
        finally:
            _current.watch = outer
    if watch.expired:  # the answer came just in time, but its connection is cut
        response.close()
        raise too_slow
    return response


class _WatchedConnection(HTTPConnection):
    def _new_conn(self) -> socket.socket:
        sock = super()._new_conn()
        _watch(sock)  # before TLS: a handshake trickled is cut too
        return sock

    def putrequest(self, method: str, url: str, skip_host: bool = False, skip_accept_encoding: bool = False) -> None:
        _watch(self.sock)  # a connection kept alive from an earlier request (None when not connected yet)
        super().putrequest(method, url, skip_host, skip_accept_encoding)


class _WatchedHTTPSConnection(_WatchedConnection, HTTPSConnection):
    pass


class _WatchedPool(HTTPConnectionPool):
    ConnectionCls = _WatchedConnection


class _WatchedHTTPSPool(HTTPSConnectionPool):
    ConnectionCls = _WatchedHTTPSConnection


_POOLS = {"http": _WatchedPool, "https": _WatchedHTTPSPool}


class WatchedAdapter(HTTPAdapter):
    """requests' adapter, whose connections (direct or through an HTTP proxy) answered_within can cut."""

    def init_poolmanager(self, *args: Any, **kwargs: Any) -> None:
        super().init_poolmanager(*args, **kwargs)
        self.poolmanager.pool_classes_by_scheme = _POOLS

    def proxy_manager_for(self, proxy: str, **proxy_kwargs: Any) -> Any:
        manager = super().proxy_manager_for(proxy, **proxy_kwargs)
        if manager.pool_classes_by_scheme is poolmanager.pool_classes_by_scheme:  # not a SOCKS proxy's own
            manager.pool_classes_by_scheme = _POOLS
        return manager
