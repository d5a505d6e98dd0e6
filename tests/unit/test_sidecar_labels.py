"""The compose project rebuilt from container labels (compose_ckpt.domain.stack.labels)."""

from pathlib import Path

import pytest

from compose_ckpt.compose import ServiceDependency
from compose_ckpt.const import (
    LABEL_CONFIG_FILES,
    LABEL_DEPENDS_ON,
    LABEL_ONEOFF,
    LABEL_PROJECT,
    LABEL_SERVICE,
    LABEL_WORKING_DIR,
)
from compose_ckpt.domain.stack.labels import compose_project_from_labels, parse_depends_on
from compose_ckpt.engine import ContainerInfo
from compose_ckpt.errors import UsageError


def container(name: str, service: str, project_name: str = "shop", **labels: str) -> ContainerInfo:
    base = {LABEL_PROJECT: project_name, LABEL_SERVICE: service, LABEL_WORKING_DIR: "/srv/shop",
            LABEL_CONFIG_FILES: "/srv/shop/compose.yaml,/srv/shop/compose.override.yaml"}
    return ContainerInfo(id=name, name=name, image=f"{service}:1", image_id="sha256:x", status="running", pid=1,
                         exit_code=0, labels={**base, **labels}, started_at="", attrs={})


def test_depends_on_label() -> None:
    assert parse_depends_on("kv:service_started:false,db:service_healthy:true") == (
        ServiceDependency("kv", "service_started"), ServiceDependency("db", "service_healthy"))
    assert parse_depends_on("") == ()


@pytest.mark.parametrize("text", ["kv:service_sleeping:false", ":service_started:false"])
def test_bad_depends_on_label(text: str) -> None:
    with pytest.raises(UsageError, match=LABEL_DEPENDS_ON):
        parse_depends_on(text)


def test_project_from_labels() -> None:
    project = compose_project_from_labels("shop", [
        container("shop-web-2", "web", **{LABEL_DEPENDS_ON: "db:service_healthy:true"}),
        container("shop-web-1", "web", **{LABEL_DEPENDS_ON: "db:service_healthy:true"}),
        container("shop-db-1", "db"),
        container("shop-web-run-1", "web", **{LABEL_ONEOFF: "True"}),
        container("blog-app-1", "app", project_name="blog"),
    ])
    assert project.name == "shop"
    assert project.working_dir == Path("/srv/shop")
    assert project.config_files == (Path("/srv/shop/compose.yaml"), Path("/srv/shop/compose.override.yaml"))
    assert list(project.services) == ["db", "web"]
    web = project.services["web"]
    assert (web.image, web.replicas, web.container_name) == ("web:1", 2, None)
    assert web.depends_on == (ServiceDependency("db", "service_healthy"),)


def test_no_container_of_the_project() -> None:
    with pytest.raises(UsageError, match="shop"):
        compose_project_from_labels("shop", [container("blog-app-1", "app", project_name="blog")])
