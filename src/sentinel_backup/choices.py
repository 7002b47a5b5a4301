"""The closed sets of values settings take (names as written in .env and manifests).

A module of its own, free of pydantic, so code that only needs a name (logging, the
stream stages) starts without loading the settings schema.
"""

from __future__ import annotations

from enum import StrEnum


class LogLevel(StrEnum):
    DEBUG = "DEBUG"
    INFO = "INFO"
    WARN = "WARN"
    ERROR = "ERROR"


class LogFormat(StrEnum):
    TEXT = "text"
    JSON = "json"


class BackupFormat(StrEnum):
    PLAIN = "plain"
    CUSTOM = "custom"
    DIRECTORY = "directory"


class BackupMode(StrEnum):
    LOGICAL = "logical"
    PHYSICAL = "physical"


class Checkpoint(StrEnum):
    FAST = "fast"
    SPREAD = "spread"


class Compression(StrEnum):
    GZIP = "gzip"
    ZSTD = "zstd"
    NONE = "none"


class EncryptionMethod(StrEnum):
    AES = "aes-256-cbc"
    AGE = "age"


class NotificationLevel(StrEnum):
    ALL = "all"
    ERROR = "error"
    NONE = "none"


class WebhookFormat(StrEnum):
    AUTO = "auto"
    SLACK = "slack"
    DISCORD = "discord"
    JSON = "json"


class VerifyMode(StrEnum):
    NONE = "none"
    INTEGRITY = "integrity"
    REREAD = "reread"
    RESTORE = "restore"


__all__ = ["BackupFormat", "Compression", "EncryptionMethod", "LogFormat", "LogLevel", "NotificationLevel",
           "VerifyMode", "WebhookFormat"]
