"""Pure parts of the registry support: references, Docker credentials, auth challenges, the artifact manifest."""

from __future__ import annotations

import base64
import json
import stat
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import pytest

from compose_ckpt.domain.transport.artifact import (
    ARTIFACT_TYPE,
    CHUNK_MEDIA_TYPE,
    CHUNK_SIZE,
    CONFIG_MEDIA_TYPE,
    Blob,
    Chunk,
    build_manifest,
    parse_manifest,
)
from compose_ckpt.errors import ArchiveError, RegistryError, UsageError
from compose_ckpt.registry.client import RegistryClient, parse_challenge
from compose_ckpt.registry.credentials import ANONYMOUS, Credentials, load_credentials
from compose_ckpt.registry.reference import Reference, parse_reference

DIGEST = "sha256:" + "a" * 64
OTHER = "sha256:" + "b" * 64


@pytest.mark.parametrize(("text", "expected"), [
    ("127.0.0.1:5000/team/app:nightly", Reference("127.0.0.1:5000", "team/app", "nightly")),
    ("registry.example/app", Reference("registry.example", "app")),
    ("localhost/a/b/c:1.0", Reference("localhost", "a/b/c", "1.0")),
    ("localhost:5000/app@" + DIGEST, Reference("localhost:5000", "app", None, DIGEST)),
    ("reg.io/app:v1@" + DIGEST, Reference("reg.io", "app", "v1", DIGEST)),
    ("ubuntu", Reference("docker.io", "library/ubuntu")),
    ("team/app:x", Reference("docker.io", "team/app", "x")),
    ("[::1]:5000/app:t", Reference("[::1]:5000", "app", "t")),
    ("ghcr.io/org/my-app__x.y:tag_1", Reference("ghcr.io", "org/my-app__x.y", "tag_1")),
])
def test_references_parse_like_docker(text: str, expected: Reference) -> None:
    assert parse_reference(text) == expected


@pytest.mark.parametrize("text", [
    "", "Team/app", "reg.io/app:", "reg.io/app:-x", "reg.io//app", "reg.io/app@sha256:abc", "reg.io/app@md5:" + "a" * 32,
    "reg.io/app:" + "t" * 129, "reg.io/-app", "reg.io/app-", "reg.io/a..b", "reg io/app", "reg.io/app/../x",
    "reg.io:port/app", "http://reg.io/app", "a" * 300,
])
def test_bad_references_are_usage_errors(text: str) -> None:
    with pytest.raises(UsageError):
        parse_reference(text)


@pytest.mark.parametrize(("registry", "loopback"), [
    ("127.0.0.1:5000", True), ("localhost", True), ("[::1]:5000", True), ("127.1.2.3", True),
    ("10.0.0.1:5000", False), ("registry.example", False), ("localhost.example.com", False), ("docker.io", False),
])
def test_only_loopback_registries_may_use_plain_http_unasked(registry: str, loopback: bool) -> None:
    assert Reference(registry, "app").is_loopback is loopback


def test_docker_hub_is_reached_at_its_api_address() -> None:
    assert parse_reference("app").api_address == "registry-1.docker.io"
    assert str(parse_reference("reg.io:5000/a/b").with_tag("s1")) == "reg.io:5000/a/b:s1"


def write_config(tmp_path: Path, document: object) -> Path:
    path = tmp_path / "config.json"
    path.write_text(json.dumps(document))
    return path


def test_credentials_come_from_auths_with_any_key_spelling(tmp_path: Path) -> None:
    auth = base64.b64encode(b"alice:pa:ss").decode()
    path = write_config(tmp_path, {"auths": {"https://reg.io:5000/v1/": {"auth": auth},
                                             "https://index.docker.io/v1/": {"identitytoken": "refresh"}}})
    assert load_credentials("reg.io:5000", path) == Credentials(username="alice", password="pa:ss")
    assert load_credentials("docker.io", path) == Credentials(identity_token="refresh")
    assert load_credentials("other.io", path) == ANONYMOUS
    assert load_credentials("reg.io", tmp_path / "missing.json") == ANONYMOUS


def fake_helper(folder: Path, name: str, answer: str, code: int = 0) -> None:
    script = folder / f"docker-credential-{name}"
    script.write_text(f"#!/bin/sh\nread server\necho \"$server\" > {folder}/asked\necho '{answer}'\nexit {code}\n")
    script.chmod(stat.S_IRWXU)


def test_credential_helpers_win_over_auths(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", f"{tmp_path}:/usr/bin:/bin")
    fake_helper(tmp_path, "pass", '{"ServerURL":"reg.io","Username":"bob","Secret":"s3"}')
    fake_helper(tmp_path, "store", '{"Username":"<token>","Secret":"idtok"}')
    path = write_config(tmp_path, {"auths": {"reg.io": {"auth": base64.b64encode(b"x:y").decode()}},
                                   "credHelpers": {"reg.io": "pass"}, "credsStore": "store"})
    assert load_credentials("reg.io", path) == Credentials(username="bob", password="s3")
    assert (tmp_path / "asked").read_text().strip() == "reg.io"
    assert load_credentials("docker.io", path) == Credentials(identity_token="idtok")
    assert (tmp_path / "asked").read_text().strip() == "https://index.docker.io/v1/"


def test_a_helper_without_credentials_means_anonymous_and_a_missing_helper_is_an_error(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", f"{tmp_path}:/usr/bin:/bin")
    fake_helper(tmp_path, "empty", "credentials not found in native keychain", code=1)
    assert load_credentials("reg.io", write_config(tmp_path, {"credsStore": "empty"})) == ANONYMOUS
    with pytest.raises(RegistryError, match="docker-credential-absent"):
        load_credentials("reg.io", write_config(tmp_path, {"credsStore": "absent"}))


def test_an_unreadable_docker_config_is_a_usage_error(tmp_path: Path) -> None:
    path = tmp_path / "config.json"
    path.write_text("{not json")
    with pytest.raises(UsageError):
        load_credentials("reg.io", path)


def test_auth_challenges_parse() -> None:
    bearer = parse_challenge('Bearer realm="https://auth.io/token",service="reg.io",scope="repository:a/b:pull,push"')
    assert bearer is not None and bearer.scheme == "bearer"
    assert bearer.params == {"realm": "https://auth.io/token", "service": "reg.io", "scope": "repository:a/b:pull,push"}
    basic = parse_challenge('Basic realm="basic-realm"')
    assert basic is not None and basic.scheme == "basic"
    assert parse_challenge("Negotiate abc") is None and parse_challenge("") is None


def chunk(path: str, offset: int, raw: int, digest: str = DIGEST, size: int = 10) -> Chunk:
    return Chunk(path, offset, raw, Blob(digest, size))


def test_the_manifest_round_trips_and_is_deterministic() -> None:
    chunks = [chunk("checkpoints/web-1/pages-1.img", CHUNK_SIZE, 5, OTHER), chunk("checkpoints/web-1/pages-1.img", 0, CHUNK_SIZE),
              chunk("compose/0-compose.yaml", 0, 0)]
    body = build_manifest(Blob(OTHER, 100), chunks, {"compose-ckpt.project": "p"})
    assert body == build_manifest(Blob(OTHER, 100), list(reversed(chunks)), {"compose-ckpt.project": "p"})
    document = json.loads(body)
    assert document["artifactType"] == ARTIFACT_TYPE and document["config"]["mediaType"] == CONFIG_MEDIA_TYPE
    assert {layer["mediaType"] for layer in document["layers"]} == {CHUNK_MEDIA_TYPE}
    artifact = parse_manifest(body, "ref")
    assert [c.offset for c in artifact.members["checkpoints/web-1/pages-1.img"]] == [0, CHUNK_SIZE]
    assert artifact.raw_bytes == CHUNK_SIZE + 5
    assert [b.digest for b in artifact.blobs] == [OTHER, DIGEST]
    assert artifact.annotations == {"compose-ckpt.project": "p"}


def tampered(change: dict[str, object] | None = None, layer: dict[str, object] | None = None,
             notes: dict[str, str] | None = None, extra_layers: list[Chunk] | None = None) -> bytes:
    chunks = [chunk("checkpoints/web-1/pages-1.img", 0, 100), *(extra_layers or [])]
    document = json.loads(build_manifest(Blob(OTHER, 10), chunks, {}))
    document.update(change or {})
    document["layers"][0].update(layer or {})
    document["layers"][0]["annotations"].update(notes or {})
    return json.dumps(document).encode()


@pytest.mark.parametrize("body", [
    b"not json", b"[]", b"{}",
    tampered({"artifactType": "application/vnd.oci.image.config.v1+json", "config": {
        "mediaType": "application/vnd.oci.image.config.v1+json", "digest": DIGEST, "size": 1}}),
    tampered(layer={"mediaType": "application/vnd.oci.image.layer.v1.tar"}),
    tampered(layer={"digest": "sha512:" + "a" * 128}), tampered(layer={"size": -1}), tampered(layer={"size": True}),
    tampered(layer={"size": 10**12}),
    tampered(notes={"org.opencontainers.image.title": "../../etc/passwd"}),
    tampered(notes={"org.opencontainers.image.title": "/etc/passwd"}),
    tampered(notes={"org.opencontainers.image.title": "checkpoints/web-1/../../x"}),
    tampered(notes={"org.opencontainers.image.title": "manifest.json"}),
    tampered(notes={"org.opencontainers.image.title": "SHA256SUMS"}),
    tampered(notes={"org.opencontainers.image.title": "elsewhere/file"}),
    tampered(notes={"compose-ckpt.offset": "-1"}), tampered(notes={"compose-ckpt.offset": "5"}),
    tampered(notes={"compose-ckpt.size": str(CHUNK_SIZE + 1)}), tampered(notes={"compose-ckpt.size": "１"}),
    tampered(extra_layers=[chunk("checkpoints/web-1/pages-1.img", 50, 100)]),  # overlap
    tampered(extra_layers=[chunk("checkpoints/web-1/pages-1.img", 200, 100)]),  # gap
])
def test_hostile_manifests_are_refused_as_archive_errors(body: bytes) -> None:
    with pytest.raises(ArchiveError):
        parse_manifest(body, "ref")


class _TokenRegistry(BaseHTTPRequestHandler):
    """A registry that wants a bearer token from its own /token realm, as Docker Hub and GHCR do."""

    seen: list[str] = []

    def log_message(self, *args: object) -> None:
        pass

    def _send(self, status: int, body: dict[str, object], headers: dict[str, str] | None = None) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        for key, value in (headers or {}).items():
            self.send_header(key, value)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self) -> None:
        url = urlsplit(self.path)
        if url.path == "/token":
            query = parse_qs(url.query)
            self.seen.append(f"GET token scope={query['scope'][0]} service={query['service'][0]}")
            ok = self.headers.get("Authorization") == "Basic " + base64.b64encode(b"alice:pw").decode()
            self._send(200, {"token": "tok"}) if ok else self._send(401, {})
        elif self.headers.get("Authorization") == "Bearer tok":
            self._send(200, {"tags": ["a", "b"]})
        else:
            realm = f"http://{self.headers['Host']}/token"
            self._send(401, {"errors": [{"code": "UNAUTHORIZED", "message": "authentication required"}]},
                       {"WWW-Authenticate": f'Bearer realm="{realm}",service="fake",scope="repository:team/app:pull"'})

    def do_POST(self) -> None:
        form = parse_qs(self.rfile.read(int(self.headers["Content-Length"])).decode())
        self.seen.append(f"POST token grant={form['grant_type'][0]} refresh={form['refresh_token'][0]}")
        self._send(200, {"access_token": "tok"})


@pytest.fixture
def token_registry() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _TokenRegistry)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    _TokenRegistry.seen = []
    yield f"127.0.0.1:{server.server_address[1]}"
    server.shutdown()


def test_the_bearer_token_flow_with_a_password_and_with_an_identity_token(token_registry: str) -> None:
    reference = parse_reference(f"{token_registry}/team/app")
    with RegistryClient(reference, credentials=Credentials(username="alice", password="pw")) as client:
        assert client.tags() == ["a", "b"]
        assert client.tags() == ["a", "b"]  # the token is kept: one token request
    assert _TokenRegistry.seen == ["GET token scope=repository:team/app:pull service=fake"]
    with RegistryClient(reference, credentials=Credentials(identity_token="refresh-me")) as client:
        assert client.tags() == ["a", "b"]
    assert _TokenRegistry.seen[-1] == "POST token grant=refresh_token refresh=refresh-me"


def test_a_refused_password_is_a_registry_error_naming_docker_login(token_registry: str) -> None:
    reference = parse_reference(f"{token_registry}/team/app")
    with RegistryClient(reference, credentials=Credentials(username="alice", password="bad")) as client:
        with pytest.raises(RegistryError, match="refused") as refused:
            client.tags()
    assert refused.value.hint is not None and "docker login" in refused.value.hint
