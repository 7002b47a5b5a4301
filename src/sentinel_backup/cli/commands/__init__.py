"""One module per command; importing them registers them on the app."""

from sentinel_backup.cli.commands import (
    backup,
    check,
    demo,
    drill,
    list_,
    notify_test,
    pin,
    prune,
    restore,
    schedule,
    show,
    verify,
    wal,
)

__all__ = ["backup", "check", "demo", "drill", "list_", "notify_test", "pin", "prune", "restore", "schedule", "show",
           "verify", "wal"]
