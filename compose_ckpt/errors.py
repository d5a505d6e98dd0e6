"""The one exception hierarchy of compose-ckpt.

Every error a user can meet is a ``CkptError``: it carries a message meant for
people, an optional hint saying what to do, and the exit code the CLI returns.
The CLI catches ``CkptError`` once, at its edge; the engine adapter translates
Docker SDK errors into these classes, so no other layer sees ``docker.errors``.
"""

from __future__ import annotations

from enum import IntEnum


class ExitCode(IntEnum):
    """Exit codes of the ``compose-ckpt`` command, documented in README.md."""

    OK = 0
    FAILURE = 1  # the operation ran and failed (snapshot rolled back, checks failed)
    USAGE = 2  # bad flags, names or arguments (Typer uses 2 for its own usage errors)
    CONFIG = 3  # compose files or variables are invalid
    NOT_FOUND = 4  # no such snapshot, service or container
    ENGINE = 5  # the Docker engine or a registry is unreachable or refused a call
    CONFLICT = 6  # another operation holds the project, or a container is in the way
    ARCHIVE = 7  # an archive or the store is damaged, tampered with or unsafe
    INTERRUPTED = 130  # Ctrl-C


class CkptError(Exception):
    """Root of every user-facing error."""

    exit_code: ExitCode = ExitCode.FAILURE

    def __init__(self, message: str, *, hint: str | None = None, details: list[str] | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint
        self.details = details or []

    def __str__(self) -> str:
        return self.message


class Declined(CkptError):
    """The user answered no to a question asked before anything changed."""

    def __init__(self) -> None:
        super().__init__("declined: nothing was changed")


class UsageError(CkptError):
    exit_code = ExitCode.USAGE


class ComposeFileError(CkptError):
    """A compose file cannot be read, parsed or interpolated."""

    exit_code = ExitCode.CONFIG

    def __init__(self, message: str, *, path: str | None = None, line: int | None = None, hint: str | None = None) -> None:
        where = ""
        if path is not None:
            where = f"{path}:{line}: " if line is not None else f"{path}: "
        super().__init__(f"{where}{message}", hint=hint)
        self.path = path
        self.line = line


class NotFoundError(CkptError):
    exit_code = ExitCode.NOT_FOUND


class EngineUnavailable(CkptError):
    """The Docker daemon cannot be reached at all."""

    exit_code = ExitCode.ENGINE


class EngineError(CkptError):
    """The Docker daemon answered with an error."""

    exit_code = ExitCode.ENGINE


class ConflictError(CkptError):
    exit_code = ExitCode.CONFLICT


class ArchiveError(CkptError):
    """A snapshot archive is damaged, tampered with or unsafe to unpack."""

    exit_code = ExitCode.ARCHIVE


class UnsafePathError(CkptError):
    """A folder or file that another local user could change, or a link where none may be: refused, never used."""

    exit_code = ExitCode.ARCHIVE


class SnapshotFailed(CkptError):
    """A snapshot did not complete; the stack was put back as it was."""


class RestoreFailed(CkptError):
    """A restore did not bring every service back restored."""


class RegistryError(CkptError):
    """A registry is unreachable, refused our credentials, or answered with an error."""

    exit_code = ExitCode.ENGINE


class NeedsAdoption(CkptError):
    """This engine (Docker 28 and later) cannot restore containers with a network namespace of their own."""


class RecoveryFailed(CkptError):
    """What an interrupted snapshot left behind could not all be put back with its state."""
