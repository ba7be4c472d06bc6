"""Errors that the CLI turns into a message, a hint and an exit code.

Library and stage code raise these; only :func:`uniseg_cli.cli.main` prints them.

| code | class                 | meaning                                                            |
| ---- | --------------------- | ------------------------------------------------------------------ |
| 0    |                       | success                                                            |
| 1    | UnisegError           | the command failed (known error; ``--debug`` shows the traceback)  |
| 2    | UsageError            | bad flags, bad pipeline/config file, bad value                     |
| 3    | ArtifactError         | an input artifact or file is missing, incomplete, corrupt, foreign |
| 4    | OutputExistsError     | the output already exists; re-run with ``--force``                 |
| 4    | BusyError             | another process is publishing the same run right now; wait, reuse  |
| 5    | DataError             | a dataset on disk is malformed (names the file and the fault)      |
| 6    | ServiceError          | a remote service (LLM API) or model could not be used              |
| 130  |                       | interrupted (Ctrl-C)                                               |
"""
from __future__ import annotations


class UnisegError(Exception):
    """A known failure: ``message`` says what happened, ``hint`` what to do next."""

    exit_code = 1

    def __init__(self, message: str, hint: str | None = None):
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:  # pragma: no cover - trivial
        return self.message


class UsageError(UnisegError):
    exit_code = 2


class ArtifactError(UnisegError):
    exit_code = 3


class OutputExistsError(UnisegError):
    exit_code = 4


class BusyError(OutputExistsError):
    """Another process holds the publishing lock of the same run id (its result will be reusable)."""


class DataError(UnisegError):
    exit_code = 5


class ServiceError(UnisegError):
    exit_code = 6


EXIT_CODES = {
    "ok": 0,
    "failed": UnisegError.exit_code,
    "usage": UsageError.exit_code,
    "artifact": ArtifactError.exit_code,
    "exists": OutputExistsError.exit_code,
    "data": DataError.exit_code,
    "service": ServiceError.exit_code,
    "interrupted": 130,
}
