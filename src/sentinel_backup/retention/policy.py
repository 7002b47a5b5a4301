"""The retention policy: which rules are on (``RETENTION_*``, per-destination overrides).
The semantics of the rules are in ``retention.plan``."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from sentinel_backup.errors import ConfigError

if TYPE_CHECKING:
    from sentinel_backup.config import Settings


@dataclass(frozen=True)
class RetentionPolicy:
    """Which backups to keep. ``None`` or 0 switches a rule off."""

    days: int | None = None
    keep_last: int | None = None
    keep_daily: int | None = None
    keep_weekly: int | None = None
    keep_monthly: int | None = None
    keep_yearly: int | None = None
    timezone: str = "UTC"

    def __post_init__(self) -> None:
        for name in ("days", "keep_last", "keep_daily", "keep_weekly", "keep_monthly", "keep_yearly"):
            value = getattr(self, name)
            if value is not None and value < 0:
                raise ConfigError(f"retention: {name} must be >= 0 (got {value})", "use 0 to switch a rule off")
        self.zone()  # fail early on an unknown time zone

    @classmethod
    def from_settings(cls, settings: Settings, destination: str) -> RetentionPolicy:
        """The policy for one destination (`local`, `s3`, `minio`) with its overrides."""
        days = settings.retention_days
        override = {"s3": settings.s3_retention_days, "minio": settings.minio_retention_days}.get(destination)
        if override is not None:
            days = override
        return cls(days=days, keep_last=settings.retention_keep_last, keep_daily=settings.retention_keep_daily,
                   keep_weekly=settings.retention_keep_weekly, keep_monthly=settings.retention_keep_monthly,
                   keep_yearly=settings.retention_keep_yearly, timezone=settings.retention_timezone)

    def zone(self) -> ZoneInfo:
        try:
            return ZoneInfo(self.timezone)
        except (ZoneInfoNotFoundError, ValueError):
            raise ConfigError(f"RETENTION_TIMEZONE: unknown time zone {self.timezone!r}",
                              "use an IANA name such as UTC or Europe/Paris") from None

    @property
    def empty(self) -> bool:
        """True when no rule is on: nothing but incomplete leftovers is ever removed."""
        return not any((self.days, self.keep_last, self.keep_daily, self.keep_weekly,
                        self.keep_monthly, self.keep_yearly))

    def describe(self) -> str:
        parts = [f"{name} {value}" for name, value in (
            ("days", self.days), ("last", self.keep_last), ("daily", self.keep_daily),
            ("weekly", self.keep_weekly), ("monthly", self.keep_monthly), ("yearly", self.keep_yearly)) if value]
        return ", ".join(parts) + f" ({self.timezone})" if parts else "no rule"
