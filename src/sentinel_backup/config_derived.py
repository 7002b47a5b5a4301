"""What the settings derive from their values: one implementation for the schema (``config.Settings``)
and the lean reader (``config_lean.LeanSettings``), free of pydantic."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING

from sentinel_backup.choices import Compression
from sentinel_backup.config_values import parse_timeout, read_secret_file


class SettingsDerived:
    if TYPE_CHECKING:  # the fields these read (declared by Settings, or set by LeanSettings)
        postgres_db: str
        globals_enabled: bool | None
        postgres_password: str | None
        postgres_password_file: Path | None
        lock_wait_timeout: str
        compression_level: int | None
        compression: Compression
        _aws_env: dict[str, str]
        _warnings: list[str]

    @property
    def aws_env(self) -> dict[str, str]:
        """AWS SDK variables from the .env file that the process environment does not override
        (storage/aws_env.py hands them to botocore). Secret: never log them."""
        return self._aws_env

    @property
    def warnings(self) -> list[str]:
        """Problems found while loading that do not stop the program (unknown variables)."""
        return self._warnings

    @property
    def databases(self) -> list[str]:
        """The database names from POSTGRES_DB (``["all"]`` stays as is; see source)."""
        return [d.strip() for d in self.postgres_db.split(",") if d.strip()]

    @property
    def all_databases(self) -> bool:
        return [d.lower() for d in self.databases] == ["all"]

    @property
    def dump_globals(self) -> bool:
        if self.globals_enabled is not None:
            return self.globals_enabled
        return self.all_databases or len(self.databases) > 1

    def password(self) -> str | None:
        """The source password from POSTGRES_PASSWORD or POSTGRES_PASSWORD_FILE."""
        if self.postgres_password is not None:
            return self.postgres_password
        if self.postgres_password_file is not None:
            return read_secret_file(self.postgres_password_file, "POSTGRES_PASSWORD_FILE")
        return None

    @property
    def lock_wait(self) -> timedelta:
        """LOCK_WAIT_TIMEOUT; zero means wait forever."""
        return parse_timeout(self.lock_wait_timeout)

    def effective_compression_level(self) -> int:
        if self.compression_level is not None:
            return self.compression_level
        return {Compression.GZIP: 6, Compression.ZSTD: 3, Compression.NONE: 0}[self.compression]
