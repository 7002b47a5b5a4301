"""One module per command; importing them registers them on the app."""

from . import backup, check, demo, list_, notify_test, prune, restore, schedule, verify

__all__ = ["backup", "check", "demo", "list_", "notify_test", "prune", "restore", "schedule", "verify"]
