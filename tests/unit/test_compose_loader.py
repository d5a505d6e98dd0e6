"""The compose loader on small projects written to tmp_path.

Behaviours that need the real ``docker compose`` as a referee live in
tests/integration/test_compose_oracle.py; these pin down our own rules and errors.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from compose_ckpt.compose import ComposeProject, ProjectOptions, ServiceDependency
from compose_ckpt.compose.loader import load_project
from compose_ckpt.errors import ComposeFileError, UsageError

SIMPLE = "services:\n  app:\n    image: busybox\n"


def write(root: Path, files: dict[str, str]) -> Path:
    for name, text in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return root


def load(cwd: Path, environ: dict[str, str] | None = None, **options: object) -> ComposeProject:
    return load_project(ProjectOptions(cwd=cwd, environ=environ or {}, **options))  # type: ignore[arg-type]


# --- discovery --------------------------------------------------------------


def test_default_file_found_in_parent_with_its_override(tmp_path: Path) -> None:
    root = write(tmp_path / "stack", {
        "compose.yaml": SIMPLE,
        "compose.override.yml": "services:\n  app:\n    image: busybox:1.36\n",
        "a/b/.keep": "",
    })
    project = load(root / "a" / "b")
    assert project.config_files == (root / "compose.yaml", root / "compose.override.yml")
    assert project.working_dir == root
    assert project.name == "stack"
    assert project.services["app"].image == "busybox:1.36"


def test_compose_yaml_is_preferred_over_docker_compose_yml(tmp_path: Path) -> None:
    write(tmp_path, {"docker-compose.yml": "services:\n  old:\n    image: x\n", "compose.yaml": SIMPLE})
    assert list(load(tmp_path).services) == ["app"]


def test_explicit_files_skip_the_override_and_resolve_against_cwd(tmp_path: Path) -> None:
    write(tmp_path, {"conf/base.yaml": SIMPLE, "conf/compose.override.yaml": "services:\n  extra:\n    image: x\n", "run/.keep": ""})
    project = load(tmp_path / "run", files=("../conf/base.yaml",))
    assert project.config_files == (tmp_path / "conf" / "base.yaml",)
    assert project.name == "conf"
    assert list(project.services) == ["app"]


def test_no_compose_file_lists_the_names_searched(tmp_path: Path) -> None:
    with pytest.raises(ComposeFileError, match="no compose file found") as err:
        load(tmp_path)
    hint = err.value.hint or ""
    assert "compose.yaml" in hint and "docker-compose.yml" in hint and "-f" in hint


def test_missing_explicit_file(tmp_path: Path) -> None:
    with pytest.raises(ComposeFileError, match="file not found") as err:
        load(tmp_path, files=("nope.yaml",))
    assert err.value.path == str(tmp_path / "nope.yaml")


def test_directory_given_as_file(tmp_path: Path) -> None:
    (tmp_path / "dir").mkdir()
    with pytest.raises(ComposeFileError, match="is a directory"):
        load(tmp_path, files=("dir",))


def test_unreadable_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    write(tmp_path, {"compose.yaml": SIMPLE})
    real_read = Path.read_bytes

    def read_bytes(path: Path) -> bytes:
        if path.name == "compose.yaml":
            raise PermissionError(13, "Permission denied")
        return real_read(path)

    # chmod cannot make a file unreadable for root, so the refusal is simulated
    monkeypatch.setattr(Path, "read_bytes", read_bytes)
    with pytest.raises(ComposeFileError, match="permission denied"):
        load(tmp_path)


def test_stdin_is_refused(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="stdin"):
        load(tmp_path, files=("-",))


def test_compose_file_variable_with_custom_separator(tmp_path: Path) -> None:
    write(tmp_path, {"a.yml": SIMPLE, "b.yml": "services:\n  app:\n    labels: [from=b]\n"})
    project = load(tmp_path, {"COMPOSE_FILE": "a.yml;b.yml", "COMPOSE_PATH_SEPARATOR": ";"})
    assert project.config_files == (tmp_path / "a.yml", tmp_path / "b.yml")
    assert project.services["app"].labels == {"from": "b"}


# --- environment --------------------------------------------------------------


def test_process_environment_beats_dotenv(tmp_path: Path) -> None:
    write(tmp_path, {
        "compose.yaml": "services:\n  app:\n    image: ${IMG}:${TAG}\n",
        ".env": "IMG=from-dotenv\nTAG=dotenv-tag\n",
    })
    assert load(tmp_path, {"TAG": "process-tag"}).services["app"].image == "from-dotenv:process-tag"


def test_compose_variables_can_come_from_dotenv(tmp_path: Path) -> None:
    write(tmp_path, {
        "compose.yaml": "services:\n  app:\n    image: x\n    profiles: [p]\n",
        "other.yaml": "services:\n  app:\n    image: y\n    profiles: [p]\n",
        ".env": "COMPOSE_FILE=compose.yaml:other.yaml\nCOMPOSE_PROJECT_NAME=named\nCOMPOSE_PROFILES=p\n",
    })
    project = load(tmp_path)
    assert project.name == "named"
    assert project.services["app"].image == "y"


def test_env_file_replaces_dotenv(tmp_path: Path) -> None:
    write(tmp_path, {
        "compose.yaml": "services:\n  app:\n    image: ${A:-none}-${B:-none}\n",
        ".env": "A=default-dotenv\n",
        "one.env": "B=one\n",
        "two.env": "B=two\n",
    })
    assert load(tmp_path, env_files=("one.env", "two.env")).services["app"].image == "none-two"


def test_missing_env_file(tmp_path: Path) -> None:
    write(tmp_path, {"compose.yaml": SIMPLE})
    with pytest.raises(ComposeFileError, match="file not found"):
        load(tmp_path, env_files=("missing.env",))


def test_missing_required_variable_names_variable_and_message(tmp_path: Path) -> None:
    write(tmp_path, {"compose.yaml": "services:\n  app:\n    image: ${IMG:?set IMG first}\n"})
    with pytest.raises(ComposeFileError) as err:
        load(tmp_path)
    assert "required variable IMG is missing a value: set IMG first" in err.value.message
    assert "services.app.image" in err.value.message
    assert err.value.path == str(tmp_path / "compose.yaml")


def test_interpolation_sees_the_project_name(tmp_path: Path) -> None:
    write(tmp_path / "proj", {"compose.yaml": "services:\n  app:\n    image: x\n    container_name: ${COMPOSE_PROJECT_NAME}-app\n"})
    assert load(tmp_path / "proj", project_name="given").services["app"].container_name == "given-app"


# --- project name -----------------------------------------------------------


@pytest.mark.parametrize(
    ("folder", "expected"),
    [("My.App_Dir", "myapp_dir"), ("__Leading-Junk", "leading-junk"), ("plain", "plain")],
)
def test_folder_name_is_normalised(tmp_path: Path, folder: str, expected: str) -> None:
    write(tmp_path / folder, {"compose.yaml": SIMPLE})
    assert load(tmp_path / folder).name == expected


def test_folder_name_normalised_to_nothing(tmp_path: Path) -> None:
    write(tmp_path / "_.._", {"compose.yaml": SIMPLE})
    with pytest.raises(UsageError, match="project name") as err:
        load(tmp_path / "_.._")
    assert "-p" in (err.value.hint or "")


def test_project_name_precedence(tmp_path: Path) -> None:
    write(tmp_path / "folder", {"compose.yaml": "name: From.Key\n" + SIMPLE})
    cwd = tmp_path / "folder"
    assert load(cwd).name == "fromkey"
    assert load(cwd, {"COMPOSE_PROJECT_NAME": "from-env"}).name == "from-env"
    assert load(cwd, {"COMPOSE_PROJECT_NAME": "from-env"}, project_name="from-flag").name == "from-flag"
    assert load(cwd, {"COMPOSE_PROJECT_NAME": ""}).name == "fromkey"


def test_last_file_naming_the_project_wins(tmp_path: Path) -> None:
    write(tmp_path, {"a.yaml": "name: first\n" + SIMPLE, "b.yaml": "name: second\nservices: {}\n"})
    assert load(tmp_path, files=("a.yaml", "b.yaml")).name == "second"


@pytest.mark.parametrize("bad", ["Upper", "_leading", "dot.ted", "sp ace"])
def test_invalid_explicit_project_name(tmp_path: Path, bad: str) -> None:
    write(tmp_path, {"compose.yaml": SIMPLE})
    with pytest.raises(UsageError, match="invalid project name"):
        load(tmp_path, project_name=bad)
    with pytest.raises(UsageError, match="COMPOSE_PROJECT_NAME"):
        load(tmp_path, {"COMPOSE_PROJECT_NAME": bad})


def test_project_directory_sets_working_dir_dotenv_and_name(tmp_path: Path) -> None:
    write(tmp_path, {"files/compose.yaml": "services:\n  app:\n    image: ${IMG}\n", "proj/.env": "IMG=from-proj\n", "files/.env": "IMG=from-files\n"})
    project = load(tmp_path, files=("files/compose.yaml",), project_directory="proj")
    assert (project.name, project.working_dir) == ("proj", tmp_path / "proj")
    assert project.services["app"].image == "from-proj"


# --- YAML and types ------------------------------------------------------------


def test_malformed_yaml_reports_the_line(tmp_path: Path) -> None:
    write(tmp_path, {"compose.yaml": "services:\n  app:\n    image: [unclosed\n    other: 1\n"})
    with pytest.raises(ComposeFileError, match="invalid YAML") as err:
        load(tmp_path)
    assert err.value.line == 4
    assert str(err.value).startswith(f"{tmp_path / 'compose.yaml'}:4: ")


def test_duplicate_key_is_an_error(tmp_path: Path) -> None:
    write(tmp_path, {"compose.yaml": "services:\n  app:\n    image: a\n    image: b\n"})
    with pytest.raises(ComposeFileError, match="defined twice") as err:
        load(tmp_path)
    assert err.value.line == 4


def test_reset_and_override_tags(tmp_path: Path) -> None:
    write(tmp_path, {
        "compose.yaml": "services:\n  app:\n    image: a\n    labels: {a: '1', b: '2'}\n    depends_on: [db]\n"
                        "    network_mode: host\n  db: {image: d}\n",
        "compose.override.yaml": "services:\n  app:\n    labels: !override {c: '3'}\n    depends_on: !reset []\n"
                                 "    network_mode: !reset null\n",
    })
    app = load(tmp_path).services["app"]
    assert (dict(app.labels), app.depends_on, app.network_mode) == ({"c": "3"}, (), None)


def test_documents_of_one_file_merge_in_order(tmp_path: Path) -> None:
    write(tmp_path, {"compose.yaml": "services:\n  app: {image: a, labels: [x=1]}\n---\nservices:\n  app: {image: b}\n"
                                     "  db: {image: d}\n"})
    services = load(tmp_path).services
    assert (services["app"].image, dict(services["app"].labels), list(services)) == ("b", {"x": "1"}, ["app", "db"])


def test_yes_and_on_stay_strings_like_in_compose(tmp_path: Path) -> None:
    write(tmp_path, {"compose.yaml": "services:\n  app:\n    image: a\n    labels:\n      yes: on\n      t: true\n      n:\n      f: 1.50\n"})
    assert load(tmp_path).services["app"].labels == {"yes": "on", "t": "true", "n": "", "f": "1.5"}


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "empty compose file"),
        ("- a\n", "top level must be a mapping"),
        ("services: [app]\n", "services must be a mapping"),
        ("services:\n  app:\n", "services.app must be a mapping"),
        ("services:\n  'a b': {image: x}\n", "invalid service name"),
        ("services:\n  app: {image: 5}\n", "services.app.image must be a string"),
        ("services:\n  app: {image: x, container_name: 5}\n", "services.app.container_name must be a string"),
        ("services:\n  app: {image: x, depends_on: db}\n", "services.app.depends_on must be a list"),
        ("services:\n  app: {image: x, depends_on: {db: service_started}}\n", "services.app.depends_on.db must be a mapping"),
        ("services:\n  app: {image: x, depends_on: {db: {required: true}}}\n", "services.app.depends_on.db: condition is required"),
        ("services:\n  app: {image: x, depends_on: {db: {condition: started}}}\n", "services.app.depends_on.db.condition must be one of"),
        ("services:\n  app: {image: x, whatever: [1, 2]}\n", "services.app: additional property whatever is not allowed"),
        ("services:\n  app: {image: x}\nsecret: {}\n", "additional property secret is not allowed"),
        ("services:\n  app: {image: x, depends_on: {db: {condition: service_started, required: 'no'}}}\n", "required must be true or false"),
        ("services:\n  app: {image: x, labels: a=b}\n", "services.app.labels must be a mapping or a list"),
        ("services:\n  app: {image: x, profiles: p}\n", "services.app.profiles must be a list"),
        ("services:\n  app: {image: x, deploy: {replicas: many}}\n", "services.app.deploy.replicas must be a non-negative integer"),
        ("services:\n  app: {image: x, deploy: {replicas: -1}}\n", "must be a non-negative integer"),
        ("services:\n  app: {image: x, scale: true}\n", "services.app.scale must be a non-negative integer"),
        ("services:\n  app: {image: x, deploy: [1]}\n", "services.app.deploy must be a mapping"),
    ],
)
def test_wrong_types_are_reported(tmp_path: Path, text: str, message: str) -> None:
    write(tmp_path, {"compose.yaml": text})
    with pytest.raises(ComposeFileError, match=message) as err:
        load(tmp_path)
    assert err.value.path == str(tmp_path / "compose.yaml")


def test_extensions_and_version_are_allowed(tmp_path: Path) -> None:
    write(tmp_path, {"compose.yaml": "version: '3'\nx-thing: 1\nvolumes: {data: {}}\nservices:\n  app:\n    image: a\n    x-whatever: [1, 2]\n"})
    assert load(tmp_path).services["app"].image == "a"


# --- service model ----------------------------------------------------------------


def test_service_fields(tmp_path: Path) -> None:
    write(tmp_path, {"compose.yaml": """
services:
  app:
    build: .
    container_name: the-app
    labels: [a=1, flag, "k= spaced "]
    depends_on:
      db: {condition: service_healthy}
      job: {condition: service_completed_successfully, required: false}
    deploy: {replicas: "1"}
  db: {image: postgres, scale: "3"}
  job: {image: busybox}
"""})
    app = load(tmp_path).services["app"]
    assert (app.image, app.has_build, app.container_name, app.replicas) == (None, True, "the-app", 1)
    assert app.labels == {"a": "1", "flag": "", "k": " spaced "}
    assert app.depends_on == (
        ServiceDependency("db", "service_healthy", True),
        ServiceDependency("job", "service_completed_successfully", False),
    )
    assert load(tmp_path).services["db"].replicas == 3


def test_scale_and_replicas_must_agree(tmp_path: Path) -> None:
    write(tmp_path, {"compose.yaml": "services:\n  app: {image: x, scale: 2, deploy: {replicas: 2}}\n"})
    assert load(tmp_path).services["app"].replicas == 2
    write(tmp_path, {"compose.yaml": "services:\n  app: {image: x, scale: 2, deploy: {replicas: 3}}\n"})
    with pytest.raises(ComposeFileError, match="different values"):
        load(tmp_path)


def test_container_name_needs_a_single_replica(tmp_path: Path) -> None:
    write(tmp_path, {"compose.yaml": "services:\n  app: {image: x, container_name: c, scale: 2}\n"})
    with pytest.raises(ComposeFileError, match="container names must be unique"):
        load(tmp_path)


def test_service_needs_image_or_build(tmp_path: Path) -> None:
    write(tmp_path, {"compose.yaml": "services:\n  app: {labels: [a=b]}\n  off: {profiles: [x]}\n"})
    with pytest.raises(ComposeFileError, match="'app' has neither an image nor a build"):
        load(tmp_path)


# --- merging ----------------------------------------------------------------------


def test_merge_across_three_files(tmp_path: Path) -> None:
    write(tmp_path, {
        "1.yaml": """
services:
  web:
    image: web:1
    labels: [tier=front, owner=one]
    profiles: [a, b]
    depends_on:
      db: {condition: service_healthy, required: false}
  db: {image: db}
""",
        "2.yaml": """
services:
  web:
    image: web:2
    labels: {owner: two}
    profiles: [c, a]
    depends_on:
      db: {condition: service_started}
""",
        "3.yaml": "services:\n  cache: {image: redis}\n  web:\n    depends_on: [cache]\n",
    })
    project = load(tmp_path, files=("1.yaml", "2.yaml", "3.yaml"), profiles=("c",))
    web = project.services["web"]
    assert web.image == "web:2"
    assert web.labels == {"tier": "front", "owner": "two"}
    assert web.profiles == ("a", "b", "c")
    # the long form keeps the earlier "required: false"; the new entry gets the defaults
    assert web.depends_on == (ServiceDependency("db", "service_started", False), ServiceDependency("cache"))
    assert list(project.services) == ["web", "db", "cache"]


def test_short_depends_on_resets_an_earlier_entry(tmp_path: Path) -> None:
    write(tmp_path, {
        "compose.yaml": "services:\n  db: {image: d}\n  web:\n    image: w\n    depends_on:\n      db: {condition: service_healthy, required: false}\n",
        "compose.override.yaml": "services:\n  web:\n    depends_on: [db]\n",
    })
    assert load(tmp_path).services["web"].depends_on == (ServiceDependency("db", "service_started", True),)


def test_files_are_interpolated_before_merging(tmp_path: Path) -> None:
    # each file is interpolated on its own: a $$ escape in one is not re-read by the next
    write(tmp_path, {"compose.yaml": "services:\n  app: {image: x, labels: {a: $$HOME}}\n", "compose.override.yaml": "services:\n  app: {labels: {b: $HOME}}\n"})
    assert load(tmp_path, {"HOME": "/root"}).services["app"].labels == {"a": "$HOME", "b": "/root"}


def test_anchors_and_merge_keys(tmp_path: Path) -> None:
    write(tmp_path, {"compose.yaml": """
x-base: &base
  image: base
  labels: {from: anchor}
services:
  a:
    <<: *base
  b:
    <<: *base
    labels: {own: "1"}
"""})
    services = load(tmp_path).services
    assert (services["a"].image, services["a"].labels) == ("base", {"from": "anchor"})
    assert (services["b"].image, services["b"].labels) == ("base", {"own": "1"})


# --- extends ------------------------------------------------------------------------


def test_extends_within_the_file(tmp_path: Path) -> None:
    write(tmp_path, {"compose.yaml": """
services:
  base: {image: base, labels: {role: base, keep: "1"}, depends_on: [db]}
  child: {extends: base, labels: {role: child}}
  grandchild: {extends: {service: child}, image: other}
  db: {image: db}
"""})
    services = load(tmp_path).services
    assert services["child"].labels == {"role": "child", "keep": "1"}
    assert services["child"].depends_on == (ServiceDependency("db"),)
    assert (services["grandchild"].image, services["grandchild"].labels["role"]) == ("other", "child")


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("services:\n  a: {extends: b}\n  b: {extends: a}\n", "circular extends"),
        ("services:\n  a: {extends: ghost}\n", "extends unknown service 'ghost'"),
        ("services:\n  a: {extends: {file: other.yaml, service: b}}\n", "other.yaml: file not found"),
        ("services:\n  a: {extends: {file: compose.yaml, service: a}}\n", "circular extends"),
    ],
)
def test_extends_errors(tmp_path: Path, text: str, message: str) -> None:
    write(tmp_path, {"compose.yaml": text})
    with pytest.raises(ComposeFileError, match=message):
        load(tmp_path)


# --- profiles and dependencies ---------------------------------------------------------

PROFILED = """
services:
  app:
    image: a
    depends_on:
      metrics: {condition: service_started, required: false}
  metrics: {image: m, profiles: [monitoring]}
  debug: {image: d, profiles: [debug, dev]}
"""


@pytest.mark.parametrize(
    ("profiles", "environ", "active"),
    [
        ((), {}, ["app"]),
        (("debug",), {}, ["app", "debug"]),
        ((), {"COMPOSE_PROFILES": " monitoring , dev"}, ["app", "metrics", "debug"]),
        (("debug",), {"COMPOSE_PROFILES": "monitoring"}, ["app", "debug"]),
        (("*",), {}, ["app", "metrics", "debug"]),
        (("unknown",), {}, ["app"]),
        (("monitoring,debug",), {}, ["app"]),  # --profile is not split on commas
    ],
)
def test_profiles(tmp_path: Path, profiles: tuple[str, ...], environ: dict[str, str], active: list[str]) -> None:
    write(tmp_path, {"compose.yaml": PROFILED})
    project = load(tmp_path, environ, profiles=profiles)
    assert list(project.services) == active
    assert project.disabled_services == tuple(s for s in ("metrics", "debug") if s not in active)


def test_required_dependency_on_disabled_service(tmp_path: Path) -> None:
    write(tmp_path, {"compose.yaml": "services:\n  app: {image: a, depends_on: [tools]}\n  tools: {image: t, profiles: [tools, ops]}\n"})
    with pytest.raises(ComposeFileError, match="'app' depends on 'tools', which is disabled") as err:
        load(tmp_path)
    assert "tools, ops" in (err.value.hint or "")
    assert list(load(tmp_path, profiles=("ops",)).services) == ["app", "tools"]


def test_dependency_on_undefined_service_even_if_optional(tmp_path: Path) -> None:
    write(tmp_path, {"compose.yaml": "services:\n  app:\n    image: a\n    depends_on:\n      ghost: {condition: service_started, required: false}\n"})
    with pytest.raises(ComposeFileError, match="undefined service 'ghost'"):
        load(tmp_path)


def test_disabled_services_are_not_checked(tmp_path: Path) -> None:
    write(tmp_path, {"compose.yaml": "services:\n  app: {image: a}\n  off: {profiles: [x], depends_on: [ghost]}\n"})
    assert load(tmp_path).disabled_services == ("off",)


def test_dependency_cycle(tmp_path: Path) -> None:
    write(tmp_path, {"compose.yaml": "services:\n  a: {image: x, depends_on: [b]}\n  b: {image: x, depends_on: [c]}\n  c: {image: x, depends_on: [a]}\n"})
    with pytest.raises(ComposeFileError, match="dependency cycle: a -> b -> c -> a"):
        load(tmp_path)


# --- hash ----------------------------------------------------------------------------------


def test_config_hash_covers_every_file_in_order(tmp_path: Path) -> None:
    write(tmp_path, {"compose.yaml": SIMPLE, "compose.override.yaml": "services:\n  app: {labels: [a=b]}\n"})
    project = load(tmp_path)
    expected = hashlib.sha256(SIMPLE.encode() + b"services:\n  app: {labels: [a=b]}\n").hexdigest()
    assert project.config_hash() == expected
    write(tmp_path, {"compose.override.yaml": "services:\n  app: {labels: [a=c]}\n"})
    assert load(tmp_path).config_hash() != expected


def test_include_brings_a_project_of_its_own(tmp_path: Path) -> None:
    write(tmp_path, {
        "compose.yaml": "include:\n  - path: sub/db.yaml\n    env_file: sub/db.env\nservices:\n  app: {image: a, depends_on: [db]}\n",
        "sub/db.yaml": "services:\n  db: {image: 'db:${DB_TAG}', env_file: db.env}\n",
        "sub/db.env": "DB_TAG=16\n",
    })
    services = load(tmp_path).services
    assert (services["db"].image, services["app"].depends_on) == ("db:16", (ServiceDependency("db"),))


@pytest.mark.parametrize(("files", "message"), [
    ({"compose.yaml": "include: [other.yaml]\nservices:\n  a: {image: x}\n"}, "include: .*other.yaml: file not found"),
    ({"compose.yaml": "include: [other.yaml]\n", "other.yaml": "include: [compose.yaml]\n"}, "include cycle"),
    ({"compose.yaml": "include: [other.yaml]\nservices:\n  a: {image: x}\n", "other.yaml": "services:\n  a: {image: y}\n"},
     "conflict"),
])
def test_include_errors(tmp_path: Path, files: dict[str, str], message: str) -> None:
    write(tmp_path, files)
    with pytest.raises(ComposeFileError, match=message):
        load(tmp_path)


def test_extends_from_another_file_resolves_its_paths_there(tmp_path: Path) -> None:
    write(tmp_path, {
        "compose.yaml": "services:\n  app: {extends: {file: base/common.yaml, service: web}, labels: [own=1]}\n",
        "base/common.yaml": "services:\n  web: {extends: core, labels: [base=1]}\n  core: {image: c, env_file: core.env}\n",
        "base/core.env": "",
    })
    app = load(tmp_path).services["app"]
    assert (app.image, dict(app.labels)) == ("c", {"base": "1", "own": "1"})


def test_implicit_dependencies(tmp_path: Path) -> None:
    write(tmp_path, {"compose.yaml": """
services:
  vpn: {image: v}
  app: {image: a, network_mode: "service:vpn"}
  ipc: {image: a, ipc: "service:app", pid: "service:vpn"}
  linked: {image: a, links: ["app:alias"], volumes_from: ["ipc:ro", "container:other"]}
  host: {image: a, network_mode: host}
"""})
    services = load(tmp_path).services
    assert services["app"].depends_on == (ServiceDependency("vpn"),) and services["app"].network_mode == "service:vpn"
    assert {d.service for d in services["ipc"].depends_on} == {"app", "vpn"}
    assert {d.service for d in services["linked"].depends_on} == {"app", "ipc"}
    assert services["host"].depends_on == () and services["host"].network_mode == "host"


@pytest.mark.parametrize(("text", "message"), [
    ("services:\n  a: {image: x, network_mode: 'service:ghost'}\n", "depends on undefined service 'ghost'"),
    ("services:\n  a: {image: x, env_file: missing.env}\n", "env file .*missing.env not found"),
    ("services:\n  a: {image: x, networks: [back]}\n", "undefined network 'back'"),
    ("services:\n  a: {image: x, volumes: ['data:/d']}\n", "undefined volume 'data'"),
])
def test_references_compose_refuses(tmp_path: Path, text: str, message: str) -> None:
    write(tmp_path, {"compose.yaml": text})
    with pytest.raises(ComposeFileError, match=message):
        load(tmp_path)


def test_optional_env_files_binds_and_declared_names_are_fine(tmp_path: Path) -> None:
    write(tmp_path, {"compose.yaml": "services:\n  a:\n    image: x\n    env_file: [{path: none.env, required: false}]\n"
                                     "    networks: [default, back]\n    volumes: ['./d:/d', '/abs:/a', 'data:/x', '/anon']\n"
                                     "networks: {back: {}}\nvolumes: {data: {}}\n"})
    assert load(tmp_path).services["a"].image == "x"


def test_required_false_alone_in_an_override_is_merged_then_checked(tmp_path: Path) -> None:
    write(tmp_path, {
        "compose.yaml": "services:\n  app: {image: a, depends_on: {db: {condition: service_healthy}}}\n  db: {image: d}\n",
        "compose.override.yaml": "services:\n  app: {depends_on: {db: {required: false}}}\n",
    })
    assert load(tmp_path).services["app"].depends_on == (ServiceDependency("db", "service_healthy", False),)


def test_networks_given_an_ipam_config_are_named_as_docker_names_them(tmp_path: Path) -> None:
    """Docker shows a network given a subnet and gateway as it shows one it picked them for: restore learns
    from the compose files which to recreate with their recorded subnets (the same from docker compose's own
    printout: tests/unit/test_docker_compose.py)."""
    write(tmp_path, {"compose.yaml": SIMPLE + NETWORKS, "compose.override.yaml": "networks:\n  later:\n    ipam:\n"
                                                                              "      config: [{subnet: 10.9.0.0/24}]\n"})
    assert load(tmp_path, project_name="p").ipam_given == {"p_given", "custom-name", "p_later"}


NETWORKS = """networks:
  given:
    ipam:
      config:
        - subnet: 10.8.0.0/24
          gateway: 10.8.0.1
  named:
    name: custom-name
    ipam: {config: [{subnet: 10.8.1.0/24}]}
  picked: {}
  driver_only:
    ipam: {driver: default}
  outside:
    external: true
"""
