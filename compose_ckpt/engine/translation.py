"""Docker's errors, translated once: API, docker SDK and connection failures become `compose_ckpt.errors`.

Every module of the engine adapter that calls Docker wraps the call in `translated(action)`; nothing else
in the package sees an `ApiError`, a docker SDK exception or a requests exception.
"""

from __future__ import annotations

import re
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TypeVar

from compose_ckpt.engine.api import ApiError, Unreachable
from compose_ckpt.engine.contexts import START_HINT
from compose_ckpt.errors import EngineError, EngineUnavailable, NotFoundError

T = TypeVar("T")

# The daemon sometimes fails a checkpoint create or restore with
# `content sha256:...: already exists` when several run at once, and on a busy host runc gives up
# freezing a cgroup (`unable to freeze`, cgroup v1) for a pause or a checkpoint; retrying helps.
_TRANSIENT = re.compile(r"content sha256:[0-9a-f]+.*already exists|unable to freeze")
RETRY_DELAYS = (0.2, 0.4, 0.8, 1.6, 3.2)


@contextmanager
def translated(action: str) -> Iterator[None]:
    """Turn API, docker SDK and connection errors raised inside into CkptErrors naming `action`."""
    try:
        yield
    except ApiError as exc:
        error = NotFoundError if exc.status == 404 else EngineError
        raise error(f"{action}: {exc.explanation}") from exc
    except Unreachable as exc:
        raise EngineUnavailable(f"{action}: cannot reach the Docker daemon ({exc})", hint=START_HINT) from exc
    except Exception as exc:
        sdk_error = from_sdk(action, exc)
        if sdk_error is None:
            raise
        raise sdk_error from exc


def from_sdk(action: str, exc: Exception) -> Exception | None:
    """The CkptError for a docker SDK or requests exception; None for anything else."""
    if "docker" not in sys.modules:  # the SDK was never imported, so it raised nothing
        return None
    import docker.errors
    import requests.exceptions

    if isinstance(exc, docker.errors.NotFound):
        return NotFoundError(f"{action}: {str(exc.explanation or exc).strip()}")
    if isinstance(exc, docker.errors.APIError):
        return EngineError(f"{action}: {str(exc.explanation or exc).strip()}")
    if isinstance(exc, (requests.exceptions.RequestException, docker.errors.DockerException)):
        # Refused, timed out, or a stream cut off by a daemon restart: all mean the engine is not there.
        return EngineUnavailable(f"{action}: cannot reach the Docker daemon ({exc})", hint=START_HINT)
    return None


def retry_transient(call: Callable[[], T], before_retry: Callable[[], None] = lambda: None) -> T:
    """Run `call`, retrying with back-off while the daemon reports a transient `already exists`."""
    for delay in (*RETRY_DELAYS, None):
        try:
            return call()
        except ApiError as exc:
            if delay is None or not _TRANSIENT.search(exc.explanation):
                raise
            time.sleep(delay)
            before_retry()
    raise AssertionError("unreachable")
