"""Exception types. Each carries its exit code and a hint for the user.

Exactly one place (``cli.main``) turns them into output and an exit status.
"""

from __future__ import annotations

EXIT_OK = 0
EXIT_FAILURE = 1
EXIT_USAGE = 2
EXIT_PARTIAL = 3
EXIT_INTERRUPTED = 130  # 128 + SIGINT, what shells report for an interrupted command


class SentinelError(Exception):
    """A failure the user can act on: message, hint, exit code."""

    exit_code = EXIT_FAILURE

    def __init__(self, message: str, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        return self.message

    def describe(self) -> str:
        """``message (hint: ...)``: the one-line form for logs, records and notifications."""
        return self.message + (f" (hint: {self.hint})" if self.hint else "")


class ConfigError(SentinelError):
    """The configuration or the command line is wrong; nothing was done."""

    exit_code = EXIT_USAGE


class SourceError(SentinelError):
    """PostgreSQL (or the container runtime) refused or failed."""


class BackupFailed(SentinelError):
    """A backup could not be taken or committed."""


class VerifyFailed(SentinelError):
    """A stored backup does not match what was recorded for it."""


class StorageError(SentinelError):
    """A destination refused or failed an operation. ``transient``: a network or store failure
    that may pass (``storage.wrappers.RetryingStorage`` tries such an operation again)."""

    transient = False


class TransientStorageError(StorageError):
    """A destination failed in a way that may pass: a timeout, a dropped connection, a 5xx."""

    transient = True


class NotFound(SentinelError):
    """The backup (or object) that was asked for does not exist."""


class UnknownName(NotFound):
    """The command line names a backup (or destination) that does not exist: a usage error."""

    exit_code = EXIT_USAGE


class RestoreFailed(SentinelError):
    """A restore did not complete; the target was not committed."""


class ObjectLocked(StorageError):
    """The store refused a deletion because of an object lock (retention skips it)."""


class Interrupted(SentinelError):
    """SIGTERM/SIGINT stopped the work; what was unfinished was removed, nothing half-done stays."""

    exit_code = EXIT_INTERRUPTED
