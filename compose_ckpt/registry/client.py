"""A client of the OCI distribution API (v2), the only code here that talks to registries.

Like the engine adapter, it translates every failure once: unreachable, TLS
refused or credentials refused -> RegistryError (exit 5); an unknown
repository, tag or manifest -> NotFoundError (exit 4).

Auth is what registries do: a request answered 401 carries a
`WWW-Authenticate` challenge; `Basic` is answered with the user and password,
`Bearer realm=...,service=...,scope=...` by fetching a token from the realm
(with the user and password, or an identity token as an OAuth refresh token)
and sending it. Tokens are kept per scope for the life of the client.

Plain HTTP is used only when allowed (`--insecure`, or a loopback registry as
Docker allows): HTTPS is tried first and HTTP only when the registry does not
speak TLS. TLS is always verified, with Docker's per-registry CA and client
certificates from /etc/docker/certs.d/<host>/ when present.

Nothing a registry does holds a command for ever: every request must be answered (status line and
headers) within transfer_deadline of what it sends (registry/deadline.py cuts its connection then), and
every body read is bounded in size and within transfer_deadline of that size.
"""

from __future__ import annotations

import base64
import json
import os
import re
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlencode, urljoin

import requests
import urllib3

from compose_ckpt.const import ENV_PULL_MIN_RATE, ENV_PULL_MIN_SECONDS
from compose_ckpt.errors import NotFoundError, RegistryError, UsageError
from compose_ckpt.registry.credentials import Credentials, load_credentials
from compose_ckpt.registry.deadline import AnsweredTooSlowly, WatchedAdapter, answered_within
from compose_ckpt.registry.reference import Reference

OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
MAX_MANIFEST_BYTES = 4 * 1024**2  # distribution's own limit
MAX_BODY_BYTES = MAX_MANIFEST_BYTES  # any answer read whole (tag lists, tokens)
MAX_ERROR_BODY_BYTES = 4096  # what is read of an error answer: enough for distribution's `errors` list
CERTS_DIR = Path("/etc/docker/certs.d")
_TIMEOUT = (15.0, 300.0)  # connect, read
_IO_SIZE = 1024**2
_CHALLENGE_PARAM = re.compile(r'(\w+)="([^"]*)"')
_TAGS_PAGE = 1000
MAX_TAGS = 100_000  # a tag list longer than that (or a Link header that never ends) is a registry misbehaving
DEFAULT_MIN_RATE = 64 * 1024  # bytes per second
DEFAULT_MIN_SECONDS = 120.0


def transfer_deadline(size: int) -> float:
    """Seconds a registry may take to send `size` bytes (a blob, or any answer read whole): at least
    $COMPOSE_CKPT_PULL_MIN_SECONDS, and as long as it takes at $COMPOSE_CKPT_PULL_MIN_RATE bytes per second.
    A registry slower than that is cut off (a pull resumes where it stopped)."""
    return max(_env_number(ENV_PULL_MIN_SECONDS, DEFAULT_MIN_SECONDS),
               size / _env_number(ENV_PULL_MIN_RATE, DEFAULT_MIN_RATE))


def _answer_timeout() -> tuple[float, float]:
    """(connect, read) timeouts of a request whose answer is read whole: a registry silent for longer than
    $COMPOSE_CKPT_PULL_MIN_SECONDS (at most 300 s) is cut off then."""
    return _TIMEOUT[0], min(_TIMEOUT[1], transfer_deadline(0))


def _env_number(name: str, default: float) -> float:
    text = os.environ.get(name)
    try:
        value = float(text) if text else default
    except ValueError:
        value = -1
    if not 0 < value < float("inf"):
        raise UsageError(f"{name} must be a positive number, not {text!r}")
    return value


@dataclass(frozen=True)
class Challenge:
    scheme: str  # basic or bearer
    params: dict[str, str]


def parse_challenge(header: str) -> Challenge | None:
    scheme, _, rest = header.strip().partition(" ")
    if scheme.lower() not in ("basic", "bearer"):
        return None
    return Challenge(scheme.lower(), dict(_CHALLENGE_PARAM.findall(rest)))


@dataclass(frozen=True)
class ManifestResponse:
    body: bytes
    digest: str | None  # Docker-Content-Digest, when the registry sent it
    media_type: str


class RegistryClient:
    """One repository on one registry, with the credentials Docker's config gives for it."""

    def __init__(self, reference: Reference, *, insecure: bool = False, credentials: Credentials | None = None) -> None:
        self.reference = reference
        self.plain_http_allowed = insecure or reference.is_loopback
        self._credentials = credentials if credentials is not None else load_credentials(reference.registry)
        self._session = requests.Session()
        self._session.headers["User-Agent"] = "compose-ckpt"
        for scheme in ("https://", "http://"):
            self._session.mount(scheme, WatchedAdapter())
        certs = CERTS_DIR / reference.registry
        if (certs / "ca.crt").is_file():
            self._session.verify = str(certs / "ca.crt")
        if (certs / "client.cert").is_file() and (certs / "client.key").is_file():
            self._session.cert = (str(certs / "client.cert"), str(certs / "client.key"))
        self._base: str | None = None
        self._lock = threading.Lock()
        self._authorization: dict[str, str] = {}  # scope -> Authorization header value
        self._default_scope = f"repository:{reference.repository}:pull"

    def close(self) -> None:
        self._session.close()

    def __enter__(self) -> RegistryClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def want_push(self) -> None:
        """Ask for push rights with the first token, rather than being refused mid-upload."""
        self._default_scope = f"repository:{self.reference.repository}:pull,push"

    # --- blobs -------------------------------------------------------------------------------------

    def blob_exists(self, digest: str) -> bool:
        response = self._request("HEAD", f"blobs/{digest}", ok=(200, 404))
        return response.status_code == 200

    def upload_blob(self, digest: str, data: bytes | memoryview, size: int) -> None:
        """Monolithic upload: POST opens an upload session, one PUT sends the bytes and the digest.

        A memoryview is sent as it is, not copied."""
        started = self._request("POST", "blobs/uploads/", ok=(201, 202))
        if started.status_code == 201:  # the registry already had it (a mount)
            return
        location = started.headers.get("Location")
        if not location:
            raise RegistryError(f"{self.reference.registry} opened an upload without saying where to send it")
        url = urljoin(self._base_url() + "/", location)
        url += ("&" if "?" in url else "?") + urlencode({"digest": digest})
        self._request("PUT", url, ok=(201,), data=data,
                      headers={"Content-Type": "application/octet-stream", "Content-Length": str(size)})

    def open_blob(self, digest: str, offset: int = 0, deadline: float | None = None) -> BlobStream:
        """A streamed GET of the blob from `offset` (a Range request, so an interrupted pull resumes), to be
        read within `deadline` seconds (default: no limit but the per-read timeout).

        The caller checks the status: 206 when the registry honoured the range, 200 when it sends it all."""
        headers = {"Range": f"bytes={offset}-"} if offset else {}
        read_timeout = _TIMEOUT[1] if deadline is None else min(_TIMEOUT[1], max(deadline, 1.0))
        response = self._request("GET", f"blobs/{digest}", ok=(200, 206, 404, 416), headers=headers, stream=True,
                                 timeout=(_TIMEOUT[0], read_timeout))
        if response.status_code == 404:
            response.close()
            raise NotFoundError(f"{self.reference.registry}/{self.reference.repository} lacks blob {digest}",
                                hint="The artifact is incomplete in the registry; push it again.")
        return BlobStream(response, digest, deadline)

    # --- manifests and tags ------------------------------------------------------------------------

    def get_manifest(self, tag_or_digest: str) -> ManifestResponse:
        response = self._request("GET", f"manifests/{tag_or_digest}", ok=(200, 404),
                                 headers={"Accept": OCI_MANIFEST}, stream=True)
        with response:
            if response.status_code == 404:  # its body unread
                raise NotFoundError(f"{self.reference} does not exist: no manifest {tag_or_digest} "
                                    f"in {self.reference.registry}/{self.reference.repository}")
            body = _read_capped(response, MAX_MANIFEST_BYTES, "manifest")
        return ManifestResponse(body, response.headers.get("Docker-Content-Digest"),
                                response.headers.get("Content-Type", "").split(";")[0].strip())

    def manifest_digest(self, tag: str) -> str | None:
        response = self._request("HEAD", f"manifests/{tag}", ok=(200, 404), headers={"Accept": OCI_MANIFEST})
        return response.headers.get("Docker-Content-Digest") if response.status_code == 200 else None

    def put_manifest(self, tag_or_digest: str, body: bytes, media_type: str = OCI_MANIFEST) -> None:
        self._request("PUT", f"manifests/{tag_or_digest}", ok=(201,), data=body,
                      headers={"Content-Type": media_type})

    def delete_manifest(self, digest: str) -> None:
        response = self._request("DELETE", f"manifests/{digest}", ok=(202, 404, 405))
        if response.status_code == 405:
            raise RegistryError(f"{self.reference.registry} does not allow deleting manifests",
                                hint="Enable deletes in the registry (distribution: storage.delete.enabled: true).")

    def tags(self) -> list[str]:
        """Every tag of the repository (following the Link header across pages); none for a new repository."""
        found: list[str] = []
        url: str | None = f"tags/list?n={_TAGS_PAGE}"
        while url:
            response = self._request("GET", url, ok=(200, 404))
            if response.status_code == 404:
                return []
            try:
                found += [str(tag) for tag in (response.json().get("tags") or [])]
            except (ValueError, AttributeError) as exc:
                raise RegistryError(f"{self.reference.registry} sent a tag list that is not JSON") from exc
            if len(found) > MAX_TAGS:
                raise RegistryError(f"{self.reference.registry} lists more than {MAX_TAGS} tags for "
                                    f"{self.reference.repository}, or its pages never end")
            link = re.match(r"<([^>]+)>", response.headers.get("Link", ""))
            url = urljoin(self._base_url() + "/", link[1]) if link else None
        return found

    # --- transport and auth ------------------------------------------------------------------------

    def _base_url(self) -> str:
        with self._lock:
            if self._base is None:
                self._base = self._probe_scheme()
            return self._base

    def _probe_scheme(self) -> str:
        address = self.reference.api_address
        try:
            answered_within(transfer_deadline(0), lambda: self._session.get(  # its body unread
                f"https://{address}/v2/", timeout=_answer_timeout(), stream=True)).close()
            return f"https://{address}"
        except requests.exceptions.SSLError as exc:
            if not self.plain_http_allowed:
                raise RegistryError(f"TLS with {address} failed: {_reason(exc)}",
                                    hint="If the registry serves plain HTTP, pass --insecure; if it uses its own CA, "
                                         f"put it in {CERTS_DIR}/{address}/ca.crt.") from None
        except requests.exceptions.RequestException as exc:
            if not self.plain_http_allowed:
                raise _unreachable(address, exc) from None
        try:
            answered_within(transfer_deadline(0), lambda: self._session.get(
                f"http://{address}/v2/", timeout=_answer_timeout(), stream=True)).close()
        except requests.exceptions.RequestException as exc:
            raise _unreachable(address, exc) from None
        return f"http://{address}"

    def _url(self, path: str) -> str:
        if path.startswith(("http://", "https://")):
            return path
        return f"{self._base_url()}/v2/{self.reference.repository}/{path}"

    def _request(self, method: str, path: str, *, ok: tuple[int, ...], headers: dict[str, str] | None = None,
                 data: bytes | memoryview | None = None, stream: bool = False,
                 timeout: tuple[float, float] | None = None) -> requests.Response:
        """The answer, once its status is in `ok`; its body read (at most MAX_BODY_BYTES) unless `stream`.

        Every answer is streamed from the socket, so no body is ever read whole before we decide: an error
        answer gives MAX_ERROR_BODY_BYTES at most, however much the registry sends."""
        url = self._url(path)
        headers = dict(headers or {})
        timeout = timeout or (_TIMEOUT if data is not None else _answer_timeout())  # an upload's answer may take a while
        seconds = transfer_deadline(len(data) if data is not None else 0)  # to connect, send it all and be answered
        scope = self._default_scope
        for attempt in range(2):
            authorization = self._authorization.get(scope)
            if authorization:
                headers["Authorization"] = authorization
            try:
                # requests hands any buffer to urllib3, which sends it as is; its hints know only bytes
                response = answered_within(seconds, lambda: self._session.request(
                    method, url, headers=headers, data=data,  # type: ignore[arg-type]
                    stream=True, timeout=timeout, allow_redirects=True))
            except requests.exceptions.RequestException as exc:
                raise _unreachable(self.reference.api_address, exc) from None
            if response.status_code != 401 or attempt:
                break
            challenge = parse_challenge(response.headers.get("WWW-Authenticate", ""))
            response.close()
            if challenge is None:
                break
            scope = challenge.params.get("scope") or scope
            self._authenticate(challenge, scope)
        if response.status_code not in ok:
            raise self._error(method, response)
        if not stream:
            with response:
                # requests' own way to hold a body read elsewhere; .json() and .content then use it.
                failed = response.status_code >= 400  # a 404 the caller expects: still an error answer
                response._content = _read_capped(response, MAX_ERROR_BODY_BYTES if failed else MAX_BODY_BYTES,
                                                 f"answer to {method}", cut=failed)
        return response

    def _authenticate(self, challenge: Challenge, scope: str) -> None:
        credentials = self._credentials
        if challenge.scheme == "basic":
            if not credentials.username:
                raise self._refused("it asks for a user name and password and Docker's config has none")
            pair = f"{credentials.username}:{credentials.password or ''}".encode()
            self._authorization[scope] = "Basic " + base64.b64encode(pair).decode()
            return
        realm = challenge.params.get("realm")
        if not realm:
            raise RegistryError(f"{self.reference.registry} asks for a bearer token without naming its realm")
        if credentials.registry_token:
            self._authorization[scope] = f"Bearer {credentials.registry_token}"
            return
        query = {"service": challenge.params.get("service", ""), "scope": scope}
        try:
            if credentials.identity_token:
                form = {**query, "grant_type": "refresh_token", "refresh_token": credentials.identity_token,
                        "client_id": "compose-ckpt"}
                answer = answered_within(transfer_deadline(0), lambda: self._session.post(
                    realm, timeout=_answer_timeout(), stream=True, data=form))
            else:
                auth = (credentials.username, credentials.password or "") if credentials.username else None
                answer = answered_within(transfer_deadline(0), lambda: self._session.get(
                    realm, params=query, auth=auth, timeout=_answer_timeout(), stream=True))
            with answer:
                answer._content = _read_capped(answer, MAX_ERROR_BODY_BYTES if answer.status_code != 200
                                               else MAX_BODY_BYTES, "token answer", cut=answer.status_code != 200)
        except requests.exceptions.RequestException as exc:
            raise _unreachable(realm, exc) from None
        if answer.status_code in (401, 403):
            raise self._refused(f"its token service refused {'anonymous access' if credentials.anonymous else 'the credentials'}")
        if answer.status_code != 200:
            raise RegistryError(f"the token service of {self.reference.registry} answered {answer.status_code}")
        try:
            document = answer.json()
            token = document.get("token") or document.get("access_token")
        except (ValueError, AttributeError):
            token = None
        if not token:
            raise RegistryError(f"the token service of {self.reference.registry} sent no token")
        self._authorization[scope] = f"Bearer {token}"

    def _refused(self, why: str) -> RegistryError:
        return RegistryError(f"{self.reference.registry} refused access to {self.reference.repository}: {why}",
                             hint=f"Log in with `docker login {self.reference.registry}` (compose-ckpt uses "
                                  "Docker's credentials), or check the repository's permissions.")

    def _error(self, method: str, response: requests.Response) -> RegistryError | NotFoundError:
        with response:
            body = _read_capped(response, MAX_ERROR_BODY_BYTES, "error answer", cut=True)
            codes, messages = _registry_errors(body)
        status = response.status_code
        if status in (401, 403):
            why = "it needs credentials and Docker's config has none" if self._credentials.anonymous else (
                "it refused the credentials from Docker's config" if status == 401 else "the credentials lack permission")
            return self._refused(why + (f" ({messages})" if messages else ""))
        if status == 404 or codes & {"NAME_UNKNOWN", "MANIFEST_UNKNOWN", "BLOB_UNKNOWN"}:
            return NotFoundError(f"{self.reference.registry}/{self.reference.repository}: {messages or 'not found'}")
        return RegistryError(f"{self.reference.registry} answered {method} with {status}"
                             + (f": {messages}" if messages else ""))


class BlobStream:
    """A blob's bytes as they arrive (the BlobDownload of domain/ports.py), within a deadline: whatever arrives
    is handed on as it comes (a registry trickling a byte at a time is seen doing so), and once the
    deadline passes, or the connection fails, the download ends with a RegistryError."""

    def __init__(self, response: requests.Response, digest: str, deadline: float | None) -> None:
        self._response = response
        self._digest = digest
        self._seconds = deadline
        self._ends = None if deadline is None else time.monotonic() + deadline

    @property
    def status_code(self) -> int:
        return self._response.status_code

    def __enter__(self) -> BlobStream:
        return self

    def __exit__(self, *exc: object) -> None:
        self._response.close()

    def iter_content(self, chunk_size: int) -> Iterator[bytes]:
        try:
            while piece := self._response.raw.read1(chunk_size):
                yield piece
                if self._ends is not None and time.monotonic() > self._ends:
                    raise RegistryError(f"the registry is sending blob {self._digest} too slowly: not done after "
                                        f"{self._seconds:.0f} s", hint="Run the same pull again: it resumes where this "
                                        "one stopped. Over a slow link, lower COMPOSE_CKPT_PULL_MIN_RATE (bytes/s).")
        except (urllib3.exceptions.HTTPError, requests.exceptions.RequestException, OSError) as exc:
            raise RegistryError(f"the download of blob {self._digest} failed: {_reason(exc)}",
                                hint="Run the same pull again: it resumes where this one stopped.") from None


def _read_capped(response: requests.Response, limit: int, what: str, *, cut: bool = False) -> bytes:
    """At most `limit` bytes of the body, read as they come within `transfer_deadline(limit)`; more, or
    slower, is an error, or with `cut` (an error answer, read only for its message) what came so far."""
    deadline = transfer_deadline(limit)
    ends = time.monotonic() + deadline
    body = bytearray()
    try:
        while piece := response.raw.read1(min(_IO_SIZE, limit + 1 - len(body)), decode_content=True):
            body += piece
            if len(body) > limit:
                if cut:
                    return bytes(body[:limit])
                raise RegistryError(f"the registry sent a {what} larger than {limit} bytes")
            if time.monotonic() > ends:
                if cut:
                    return bytes(body)
                raise RegistryError(f"the registry is sending its {what} too slowly: not done after {deadline:.0f} s",
                                    hint="Over a slow link, lower COMPOSE_CKPT_PULL_MIN_RATE (bytes/s) or raise "
                                         "COMPOSE_CKPT_PULL_MIN_SECONDS.")
    except (urllib3.exceptions.HTTPError, OSError) as exc:
        if cut:
            return bytes(body)
        raise RegistryError(f"reading the registry's {what} failed: {_reason(exc)}") from None
    return bytes(body)


def _registry_errors(body: bytes) -> tuple[set[str], str]:
    """The `errors` list distribution puts in an error body: its codes, and its messages joined."""
    try:
        errors: list[dict[str, Any]] = (json.loads(body) if body else {}).get("errors") or []
        return ({str(e.get("code")) for e in errors}, "; ".join(str(e.get("message")) for e in errors if e.get("message")))
    except (ValueError, AttributeError, TypeError, RecursionError):
        return set(), ""


def _reason(exc: Exception) -> str:
    """The root cause urllib3 buries in its message ("[Errno 111] Connection refused"), else the message."""
    text = str(exc)
    cause = re.search(r"\[Errno -?\d+\] ([^'\")]+)|(certificate verify failed[^'\")]*)|(Read timed out)"
                      r"|\[SSL: [A-Z_]+\] ([^'\"(]+)", text)
    if cause:
        return next(group for group in cause.groups() if group).strip()
    return text if len(text) < 300 else text[:300] + "..."


def _unreachable(address: str, exc: Exception) -> RegistryError:
    if isinstance(exc, (AnsweredTooSlowly, requests.exceptions.ReadTimeout)):
        return RegistryError(f"the registry at {address} answered too slowly: {_reason(exc)}",
                             hint="Over a slow link, raise COMPOSE_CKPT_PULL_MIN_SECONDS (big uploads: lower "
                                  "COMPOSE_CKPT_PULL_MIN_RATE, bytes/s).")
    return RegistryError(f"cannot reach the registry {address}: {_reason(exc)}",
                         hint="Check the address and that the registry runs (`make registry` starts a local one).")
