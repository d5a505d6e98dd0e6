from compose_ckpt.domain.host.doctor import Status, _docker_version
from compose_ckpt.domain.host.versions import version_tuple
from compose_ckpt.engine.types import EngineInfo


def info(version: str) -> EngineInfo:
    return EngineInfo(version, "1.45", True, "/var/lib/docker", "2", "6.1", "x86_64", "Debian", "overlay2", "", "", True)


def testversion_tuple_ignores_distribution_suffixes() -> None:
    assert version_tuple("26.1.5+dfsg1") == (26, 1, 5)
    assert version_tuple("4.2") >= (4, 2)
    assert version_tuple("3.17.1") < (4, 2)
    assert version_tuple(None) == (0,)


def test_docker_28_and_29_warn_about_broken_restore() -> None:
    assert _docker_version(info("28.5.2")).status is Status.WARN
    assert "moby#50750" in _docker_version(info("29.0.1")).detail
    assert _docker_version(info("26.1.5+dfsg1")).status is Status.OK
