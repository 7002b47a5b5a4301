"""One module per command; importing them registers them on the app."""

from . import backup, check, demo, list_, restore, verify

__all__ = ["backup", "check", "demo", "list_", "restore", "verify"]
